"""What models of every domain share: the strict and verbatim pydantic bases, the
patterns of ids, names, users, roles and center paths, array and directive syntax.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from adapters.base import DIRECTIVE_PATTERN
from adapters.batch import jobdir
from adapters.files import paths
from gateway.units import MAX_DURATION, MAX_MEMORY_MIB

# Array indices: "0-3", "1,3,5-7", "0-15:2", optionally "%N" elements at once.
ARRAY_PATTERN = r"^\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*(%\d+)?$"


#: The forms of `array` the document vouches for: a range from 0 (at most 10000
#: indices, a step of 1 or more) or up to 100 single indices. The server takes any
#: list of ranges (START <= END) naming at most MAX_ARRAY_ELEMENTS indices.
_ARRAY_SCHEMA_PATTERN = (
    r"^(0-[0-9]{1,4}(:[1-9][0-9]{0,3})?|[0-9]{1,4}(,[0-9]{1,4}){0,99})(%[1-9][0-9]{0,3})?$"
)


MAX_ARRAY_ELEMENTS = 10_000


def array_indices(spec: str) -> list[int]:
    """The indices an array spec names, in order, without repeats (at most MAX_ARRAY_ELEMENTS)."""
    return jobdir.array_indices(spec, limit=MAX_ARRAY_ELEMENTS)


# Names and ids that end up in remote paths, directives or URLs.
CENTER_ID_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


#: A federation user name (the `sub` of a token).
USER_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"


#: A Unix login at a center.
LOGIN_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"


#: What a token may grant; see docs/security.md for what each may do.
ROLES = ("researcher", "center-admin", "operator", "admin")


Role = Literal["researcher", "center-admin", "operator", "admin"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Verbatim(BaseModel):
    """Request input: unknown fields refused, every string kept exactly as sent, and
    types taken as the schema says (no `true` for 1, no "2" for 2, no NaN)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _whole(value: Any) -> Any:
    """2.0 is the integer 2 (JSON, and JSON Schema's `integer`, do not tell them apart);
    2.5, "2" and true stay what they are, for the strict check to refuse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: A JSON integer: 2 or 2.0, never 2.5, "2" or true.
WholeNumber = Annotated[int, BeforeValidator(_whole)]


#: JSON Schema of a size: MiB as an integer, or a string the document keeps within
#: 1 MiB .. 2 PiB (the server also takes other units and letter cases).
_MEMORY_SCHEMA: list[dict[str, Any]] = [
    {"type": "integer", "minimum": 1, "maximum": MAX_MEMORY_MIB},
    {"type": "string", "pattern": "^[1-9][0-9]{0,5}(M|G|MiB|GiB)$"},
]


#: JSON Schema of a duration: seconds, or a string the document keeps within 10 years
#: (the server also takes days, fractions and '2-00:00:00').
_DURATION_SCHEMA: list[dict[str, Any]] = [
    {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION},
    {
        "type": "string",
        "pattern": "^([1-9][0-9]{0,3}[smh]|(0[1-9]|[1-9][0-9]):[0-5][0-9]:[0-5][0-9])$",
    },
]


Directive = Annotated[str, Field(max_length=256, pattern=DIRECTIVE_PATTERN)]


#: A path as requests name it (adapters/files/paths.py: `check_form`): no control character,
#: no backslash, no '..' part, not starting with '~'. The server counts bytes (4096 a
#: path, 255 a name); the document's lengths in characters (1024, 63) keep every
#: value it allows within them, whatever the characters.
_PC = r"[^\x00-\x1f\x7f\\/]"


_PD = r"[^\x00-\x1f\x7f\\/.]"


_PD0 = r"[^\x00-\x1f\x7f\\/.~]"


_PFIRST = rf"(\.|\.\.{_PC}{{1,61}}|\.{_PD}{_PC}{{0,61}}|{_PD0}{_PC}{{0,62}})"


_PNEXT = rf"(\.|\.\.{_PC}{{1,61}}|\.{_PD}{_PC}{{0,61}}|{_PD}{_PC}{{0,62}})?"


_PATH_BODY = rf"({_PFIRST}(/{_PNEXT})*|(/{_PNEXT})+)"


PATH_PATTERN = rf"^{_PATH_BODY}$"


#: A working_dir: a path as above, or '~' and '~/...' (the login's home).
WORKDIR_PATTERN = rf"^(~|~(/{_PNEXT})+|{_PATH_BODY})$"


PATH_MAX_CHARS = 1024


#: JSON Schema of a path in a request (the model's validators apply check_form).
PATH_SCHEMA: dict[str, Any] = {"pattern": PATH_PATTERN, "maxLength": PATH_MAX_CHARS}


#: A path as a request names it; confined to the user's roots where it is used.
RemotePath = Annotated[str, Field(min_length=1, max_length=8192, json_schema_extra=PATH_SCHEMA)]


def _path_form(value: str) -> str:
    try:
        paths.check_form(value)
    except paths.PathRefused as exc:
        raise ValueError(exc.message.removeprefix("path: ")) from None
    return value


class CenterPath(_Verbatim):
    """A file or directory at a center."""

    center: str = Field(pattern=CENTER_ID_PATTERN)
    path: RemotePath

    @field_validator("path")
    @classmethod
    def _path_form(cls, value: str) -> str:
        return _path_form(value)
