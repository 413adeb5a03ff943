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


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise ApiError(400, "invalid_request", "(body): a JSON object is required", field="(body)")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, "invalid_json", f"(body): not valid JSON: {exc}", field="(body)"
        ) from None
    except RecursionError:
        # json.loads recurses per nesting level; no request of ours nests this deep.
        raise ApiError(
            400, "invalid_json", "(body): nested too deeply to be a request", field="(body)"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "(body): must be a JSON object", field="(body)")
    return data
