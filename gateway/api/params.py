"""Reading and checking request parameters; every refusal names its field."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.errors import ApiError


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_request", f"{name}: must be an integer, got {raw!r}", field=name
        ) from None
    if not low <= value <= high:
        raise ApiError(
            400, "invalid_request", f"{name}: must be {low}-{high}, got {value}", field=name
        )
    return value


def bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ApiError(
        400, "invalid_request", f"{name}: must be true or false, got {raw!r}", field=name
    )


def parse_json(raw: bytes) -> Any:
    """JSON in UTF-8 only (RFC 8259: no other encoding, no byte-order mark).

    `NaN`, `Infinity` and numbers beyond a double (1e309) are read as the floats
    they stand for, so that the model refuses them naming their field (every
    request model is strict and takes finite numbers only). Refusals never echo
    the request."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"(body): not UTF-8 (byte {exc.start}); JSON bodies must be UTF-8",
            field="(body)",
        ) from None
    if text.startswith("\ufeff"):
        raise ApiError(400, "invalid_json", "(body): starts with a byte-order mark", field="(body)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"(body): not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})",
            field="(body)",
        ) from None


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise ApiError(400, "invalid_request", "(body): a JSON object is required", field="(body)")
    try:
        data = parse_json(raw)
    except RecursionError:
        # json.loads recurses per nesting level; no request of ours nests this deep.
        raise ApiError(
            400, "invalid_json", "(body): nested too deeply to be a request", field="(body)"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "(body): must be a JSON object", field="(body)")
    return data
