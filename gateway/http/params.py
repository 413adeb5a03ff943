"""Reading and checking request parameters; every refusal names its field."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from adapters.base import JobState
from gateway.errors import DomainError, validation_error

Body = TypeVar("Body", bound=BaseModel)

#: An integer query parameter: ASCII digits, an optional leading minus.
INTEGER_PATTERN = r"^-?[0-9]{1,19}$"
_INTEGER_RE = re.compile(r"-?[0-9]{1,19}")
#: A boolean query parameter, in any letter case; empty is false.
BOOLEAN_PATTERN = r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0)?$"
#: `next_cursor` of GET /v1/jobs: base64url, no padding (empty: the first page).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{0,1024}$"
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,1024}")


def any_case(word: str) -> str:
    """A regex matching `word` in any letter case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word.upper())


def _state_item() -> str:
    states = "|".join(any_case(s.value) for s in JobState)
    return f"( *({states}) *)?"


#: `state` of GET /v1/jobs: comma-separated job states in any letter case; empty items
#: are skipped.
STATES_PATTERN = f"^{_state_item()}(,{_state_item()})*$"


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An absent parameter is `default`; an empty one, or anything but an integer in
    ASCII digits (no sign but '-', no spaces, no '_'), is 400 naming it."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INTEGER_RE.fullmatch(raw):
        raise DomainError("invalid_request", f"{name}: must be an integer, got {raw!r}", field=name)
    value = int(raw)
    if not low <= value <= high:
        raise DomainError(
            "invalid_request", f"{name}: must be {low}-{high}, got {value}", field=name
        )
    return value


def bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise DomainError("invalid_request", f"{name}: must be true or false, got {raw!r}", field=name)


def cursor_query(request: web.Request) -> str | None:
    """The `cursor` parameter, None when absent or empty; 400 when it cannot be one."""
    raw = request.query.get("cursor") or None
    if raw is not None and not _CURSOR_RE.fullmatch(raw):
        raise DomainError(
            "invalid_request", "cursor: not a cursor returned by this API", field="cursor"
        )
    return raw


def parse_json(raw: bytes) -> Any:
    """JSON in UTF-8 only (RFC 8259: no other encoding, no byte-order mark).

    `NaN`, `Infinity` and numbers beyond a double (1e309) are read as the floats
    they stand for, so that the model refuses them naming their field (every
    request model is strict and takes finite numbers only). Refusals never echo
    the request."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DomainError(
            "invalid_json",
            f"(body): not UTF-8 (byte {exc.start}); JSON bodies must be UTF-8",
            field="(body)",
        ) from None
    if text.startswith("\ufeff"):
        raise DomainError("invalid_json", "(body): starts with a byte-order mark", field="(body)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DomainError(
            "invalid_json",
            f"(body): not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})",
            field="(body)",
        ) from None


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise DomainError("invalid_request", "(body): a JSON object is required", field="(body)")
    try:
        data = parse_json(raw)
    except RecursionError:
        # json.loads recurses per nesting level; no request of ours nests this deep.
        raise DomainError(
            "invalid_json", "(body): nested too deeply to be a request", field="(body)"
        ) from None
    if not isinstance(data, dict):
        raise DomainError("invalid_request", "(body): must be a JSON object", field="(body)")
    return data


async def body_as(request: web.Request, model: type[Body]) -> Body:
    """The request's JSON object as `model`; a field it refuses is a 422 naming it."""
    try:
        return model.model_validate(await json_body(request))
    except ValidationError as exc:
        raise validation_error(exc) from None
