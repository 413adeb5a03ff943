"""Pydantic models: the job spec and record, center and gateway configuration."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from adapters import jobdir, paths
from adapters.base import ENV_NAME_RE, JobState

__all__ = [
    "CenterConfig",
    "GatewayConfig",
    "JobRecord",
    "JobSpec",
    "JobState",
    "Resources",
]

# ---------------------------------------------------------------- units

_MEMORY_UNITS = {
    "": 1 / (1024 * 1024),
    "b": 1 / (1024 * 1024),
    "k": 1 / 1024,
    "kb": 1000 / (1024 * 1024),
    "kib": 1 / 1024,
    "m": 1,
    "mb": 1000 * 1000 / (1024 * 1024),
    "mib": 1,
    "g": 1024,
    "gb": 1000**3 / (1024 * 1024),
    "gib": 1024,
    "t": 1024 * 1024,
    "tb": 1000**4 / (1024 * 1024),
    "tib": 1024 * 1024,
}
#: The largest size any field takes (2 PiB), so no conversion downstream overflows.
MAX_MEMORY_MIB = 1 << 31
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_memory_mib(value: Any) -> int:
    """'8GiB' -> 8192; '512M' -> 512; an int is taken as MiB."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as '8GiB' or '512MiB'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 2.0 is the integer 2, as JSON has it
    if isinstance(value, int):
        mib = value
    else:
        match = _MEMORY_RE.match(str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _MEMORY_UNITS:
            raise ValueError(f"must be a size such as '8GiB' or '512MiB', got {value!r}")
        amount = float(match.group(1)) * _MEMORY_UNITS[unit]
        if not amount <= MAX_MEMORY_MIB:  # also refuses what overflows to inf
            raise ValueError(f"must be at most {MAX_MEMORY_MIB} MiB, got {value!r}")
        mib = int(-(-amount // 1))  # round up
    if mib < 1:
        raise ValueError(f"must be at least 1MiB, got {value!r}")
    if mib > MAX_MEMORY_MIB:
        raise ValueError(f"must be at most {MAX_MEMORY_MIB} MiB, got {value!r}")
    return mib


#: The longest duration any field takes: far beyond every scheduler's limit, so a
#: client's number never overflows a conversion downstream.
MAX_DURATION = 10 * 366 * 86400.0
_DURATION_SUFFIX = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")
_SUFFIX_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def parse_duration_seconds(value: Any) -> float:
    """'90m', '1.5h', '01:30:00', '2-00:00:00' (days), or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '90m' or '01:30:00'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if clock := _CLOCK_RE.match(text):
            days, hours, minutes, secs = (int(g) if g else 0 for g in clock.groups())
            if minutes >= 60 or secs >= 60:
                raise ValueError(f"minutes and seconds must be below 60, got {value!r}")
            seconds = float(days * 86400 + hours * 3600 + minutes * 60 + secs)
        elif suffix := _SUFFIX_RE.match(text):
            seconds = float(suffix.group(1)) * _DURATION_SUFFIX[suffix.group(2)]
        elif re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            raise ValueError(f"must be a duration such as '90m' or '01:30:00', got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION:.0f} s (10 years), got {value!r}")
    return seconds


MemoryMiB = Annotated[int, BeforeValidator(parse_memory_mib)]
Seconds = Annotated[float, BeforeValidator(parse_duration_seconds)]

# Array indices: "0-3", "1,3,5-7", "0-15:2", optionally "%N" elements at once.
ARRAY_PATTERN = r"^\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*(%\d+)?$"
#: The forms of `array` the document vouches for: a range from 0 (at most 10000
#: indices, a step of 1 or more) or up to 100 single indices. The server takes any
#: list of ranges (START <= END) naming at most MAX_ARRAY_ELEMENTS indices.
_ARRAY_SCHEMA_PATTERN = (
    r"^(0-[0-9]{1,4}(:[1-9][0-9]{0,3})?|[0-9]{1,4}(,[0-9]{1,4}){0,99})(%[1-9][0-9]{0,3})?$"
)
MAX_ARRAY_ELEMENTS = 10_000
#: A directive argument passed through to a scheduler: no shell metacharacters,
#: because some schedulers' submit commands hand directives to a shell.
DIRECTIVE_PATTERN = r"^--?[A-Za-z0-9][A-Za-z0-9 =:,._/+@%\[\]-]*$"
DEPENDENCY_CONDITIONS = ("afterok", "afternotok", "afterany", "after")


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


# ---------------------------------------------------------------- jobs


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
#: gpu_type needs gpus_per_node (Resources._gpu_type_needs_gpus).
_GPU_TYPE_NEEDS_GPUS: dict[str, Any] = {
    "if": {"required": ["gpu_type"], "properties": {"gpu_type": {"type": "string"}}},
    "then": {"required": ["gpus_per_node"], "properties": {"gpus_per_node": {"minimum": 1}}},
}


class Resources(_Verbatim):
    model_config = ConfigDict(json_schema_extra=_GPU_TYPE_NEEDS_GPUS)

    nodes: WholeNumber = Field(1, ge=1, le=100_000)
    tasks_per_node: WholeNumber = Field(1, ge=1, le=100_000)
    cpus_per_task: WholeNumber = Field(1, ge=1, le=100_000)
    gpus_per_node: WholeNumber = Field(0, ge=0, le=64)
    gpu_type: str | None = Field(None, pattern=SAFE_NAME_PATTERN)
    memory_per_node: MemoryMiB | None = Field(
        None,
        description="e.g. '8GiB'; stored in MiB",
        json_schema_extra={"anyOf": [*_MEMORY_SCHEMA, {"type": "null"}]},
    )
    walltime: Seconds | None = Field(
        None,
        description="e.g. '01:30:00' or '90m'; stored in s",
        json_schema_extra={"anyOf": [*_DURATION_SCHEMA, {"type": "null"}]},
    )

    @model_validator(mode="after")
    def _gpu_type_needs_gpus(self) -> Resources:
        if self.gpu_type and not self.gpus_per_node:
            raise ValueError("gpu_type is set but gpus_per_node is 0")
        return self


class Dependency(_Verbatim):
    job: str = Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="gateway id of a job of yours at the same center",
    )
    condition: Literal["afterok", "afternotok", "afterany", "after"] = Field(
        "afterok",
        description="afterok: the job completed; afternotok: it failed, timed out or was "
        "cancelled; afterany: it ended; after: it started",
    )


Directive = Annotated[str, Field(max_length=256, pattern=DIRECTIVE_PATTERN)]


class ExtraDirectives(_Verbatim):
    """Directives the spec's fields do not cover, per scheduler; used at centers of that type."""

    slurm: list[Directive] = Field(default_factory=list, max_length=32)
    pbs: list[Directive] = Field(default_factory=list, max_length=32)


#: A path as requests name it (adapters/paths.py: `check_form`): no control character,
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


#: Exactly one of `source` and `upload: true` (StageIn._one_source).
_ONE_SOURCE: dict[str, Any] = {
    "oneOf": [
        {
            "required": ["source"],
            "properties": {"source": {"type": "object"}, "upload": {"const": False}},
        },
        {
            "required": ["upload"],
            "properties": {"upload": {"const": True}, "source": {"type": "null"}},
        },
    ]
}


class StageIn(_Verbatim):
    """An input put in place before the job is submitted."""

    model_config = ConfigDict(json_schema_extra=_ONE_SOURCE)

    destination: RemotePath = Field(description="relative to the job's working directory")
    source: CenterPath | None = Field(None, description="a file or directory at any center")
    upload: bool = Field(False, description="the client uploads it: PUT /v1/jobs/{id}/inputs/{i}")

    @field_validator("destination")
    @classmethod
    def _destination_form(cls, value: str) -> str:
        return _path_form(value)

    @model_validator(mode="after")
    def _one_source(self) -> StageIn:
        if (self.source is None) == (not self.upload):
            raise ValueError("give exactly one of 'source' and 'upload: true'")
        return self


class StageOut(_Verbatim):
    """An output collected (checksummed, and optionally copied) once the job ends."""

    source: RemotePath = Field(description="relative to the job's working directory")
    destination: CenterPath | None = None

    @field_validator("source")
    @classmethod
    def _source_form(cls, value: str) -> str:
        return _path_form(value)


Preference = Literal["fastest", "cheapest", "greenest", "near_data"]
PREFERENCES: tuple[str, ...] = ("fastest", "cheapest", "greenest", "near_data")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class PlacementSpec(_Verbatim):
    """How `center: auto` chooses: what matters most first, and where it may go."""

    prefer: Annotated[list[Preference], BeforeValidator(_as_list)] = Field(
        default_factory=list,
        max_length=4,
        json_schema_extra={"uniqueItems": True},
        description="fastest (earliest start), cheapest, greenest (least CO2e), near_data "
        "(where the inputs are); most important first",
    )
    regions: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=64, description="allowed regions; empty: any"
    )
    exclude: list[Annotated[str, Field(pattern=CENTER_ID_PATTERN)]] = Field(
        default_factory=list, max_length=64, description="centers never to use"
    )

    @field_validator("prefer")
    @classmethod
    def _no_repeats(cls, prefer: list[str]) -> list[str]:
        if len(set(prefer)) != len(prefer):
            raise ValueError("names a preference twice")
        return prefer


#: JSON Schema of text that holds no NUL (the model's validators refuse one).
_NO_NUL: dict[str, Any] = {"pattern": "^[^\\x00]*$"}

#: Exactly one of `script` and `command` is a string; `arguments` go with `command`.
_SCRIPT_OR_COMMAND: dict[str, Any] = {
    "oneOf": [
        {
            "required": ["script"],
            "properties": {
                "script": {"type": "string"},
                "command": {"type": "null"},
                "arguments": {"maxItems": 0},
            },
        },
        {
            "required": ["command"],
            "properties": {"command": {"type": "string"}, "script": {"type": "null"}},
        },
    ]
}


class JobSpec(_Verbatim):
    """What a researcher asks for, the same for every center."""

    model_config = ConfigDict(json_schema_extra=_SCRIPT_OR_COMMAND)

    name: str = Field("job", pattern=SAFE_NAME_PATTERN)
    script: str | None = Field(
        None, max_length=16 << 20, json_schema_extra=_NO_NUL
    )  # limits.max_spec caps it
    command: str | None = Field(None, min_length=1, max_length=4096, json_schema_extra=_NO_NUL)
    arguments: list[Annotated[str, Field(max_length=65536, json_schema_extra=_NO_NUL)]] = Field(
        default_factory=list, max_length=4096
    )
    resources: Resources = Field(default_factory=Resources)
    queue: str | None = Field(None, pattern=SAFE_NAME_PATTERN)
    account: str | None = Field(None, pattern=SAFE_NAME_PATTERN)
    environment: dict[str, Annotated[str, Field(json_schema_extra=_NO_NUL)]] = Field(
        default_factory=dict,
        max_length=1024,
        json_schema_extra={"propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}},
    )
    working_dir: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        json_schema_extra={"pattern": WORKDIR_PATTERN, "maxLength": PATH_MAX_CHARS},
    )
    qos: str | None = Field(None, pattern=SAFE_NAME_PATTERN)
    array: str | None = Field(
        None,
        pattern=ARRAY_PATTERN,
        max_length=1024,
        json_schema_extra={"pattern": _ARRAY_SCHEMA_PATTERN},
    )
    dependencies: list[Dependency] = Field(default_factory=list, max_length=64)
    extra_directives: ExtraDirectives = Field(default_factory=ExtraDirectives)
    center: str = Field("auto", pattern=r"^(auto|[a-z][a-z0-9_-]{0,31})$")
    inputs: list[StageIn] = Field(default_factory=list, max_length=256)
    outputs: list[StageOut] = Field(default_factory=list, max_length=256)
    placement: PlacementSpec | None = Field(None, description="how `center: auto` chooses")

    @field_validator("array")
    @classmethod
    def _array_size(cls, value: str | None) -> str | None:
        if value is not None:
            array_indices(value)
        return value

    @field_validator("environment")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not ENV_NAME_RE.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if "\0" in value:
                raise ValueError(f"value of {key} contains a NUL byte")
        return env

    @field_validator("script", "command", "working_dir")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:
            raise ValueError("must not contain a NUL byte")
        return value

    @field_validator("working_dir")
    @classmethod
    def _home_form(cls, value: str | None) -> str | None:
        if (
            value is not None
            and value.startswith("~")
            and value != "~"
            and not (value.startswith("~/"))
        ):
            raise ValueError("only '~' and '~/...' (the login's home) are understood, not '~user'")
        return value

    @field_validator("arguments")
    @classmethod
    def _no_nul_args(cls, args: list[str]) -> list[str]:
        for i, arg in enumerate(args):
            if "\0" in arg:
                raise ValueError(f"argument {i} contains a NUL byte")
        return args

    def content_sizes(self) -> dict[str, int]:
        """Bytes (UTF-8) of the parts of the spec that can be large, by field."""
        return {
            "script": len((self.script or "").encode()),
            "command": len((self.command or "").encode()),
            "arguments": sum(len(a.encode()) for a in self.arguments),
            "environment": sum(len(k) + len(v.encode()) for k, v in self.environment.items()),
        }

    @model_validator(mode="after")
    def _script_or_command(self) -> JobSpec:
        if (self.script is None) == (self.command is None):
            raise ValueError("give exactly one of 'script' and 'command'")
        if self.arguments and self.command is None:
            raise ValueError("'arguments' goes with 'command', not with 'script'")
        return self


class ElementRecord(BaseModel):
    """One element of an array job."""

    index: int
    native_id: str | None = None
    state: JobState
    native_state: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None  # as the center tells it
    ended_at: datetime | None = None


class StagedFile(BaseModel):
    """How one input or output of a job fared."""

    index: int
    path: str | None = None  # where it is (inputs) or was found (outputs) at the job's center
    state: Literal["pending", "waiting_upload", "done", "failed"] = "pending"
    size: int | None = None
    sha256: str | None = None
    copied_to: CenterPath | None = None
    error: str | None = None


class Staging(BaseModel):
    inputs: list[StagedFile] = Field(default_factory=list)
    outputs: list[StagedFile] = Field(default_factory=list)
    #: The state the center reported while outputs were still being collected.
    final_state: JobState | None = None
    collected: bool = False  # outputs collected (or none to collect)


class CandidateScore(BaseModel):
    """How one center fared in a placement decision."""

    center: str
    eligible: bool
    #: Why it could not take the job (each naming the spec field), when not eligible.
    refused: list[str] = Field(default_factory=list)
    partition: str | None = None
    estimated_wait_seconds: float | None = None
    cost: float | None = None  # of the whole request at its walltime, in `currency`
    currency: str | None = None
    carbon_g: float | None = None  # estimated gCO2e of the whole request
    inputs_here: int | None = None  # how many of the job's inputs are already there
    score: float | None = None  # 0..1, higher is better


class PlacementDecision(BaseModel):
    """Why `center: auto` chose where the job went."""

    chosen: str
    prefer: list[str]
    explanation: str
    candidates: list[CandidateScore] = Field(default_factory=list)
    decided_at: datetime


class Price(BaseModel):
    currency: str
    core_hour: float
    gpu_hour: float


class JobUsage(BaseModel):
    """What a job used and cost, at the price in force when it ran."""

    cores: int
    gpus: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    wall_seconds: float = 0.0
    core_hours: float = 0.0
    gpu_hours: float = 0.0
    price: Price
    cost: float = 0.0
    #: "center": times the center reported; "gateway": times the gateway saw.
    source: Literal["center", "gateway"] = "center"


class JobRecord(BaseModel):
    """A job as the gateway stores and serves it."""

    id: str
    owner: str
    center: str
    #: The login the job runs as at its center (None at the local center).
    login: str | None = None
    spec: JobSpec
    state: JobState
    native_id: str | None = None
    native_state: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    idempotency_key: str | None = None
    elements: list[ElementRecord] = Field(default_factory=list)
    staging: Staging = Field(default_factory=Staging)
    placement: PlacementDecision | None = None
    #: The price of the center when the job was sent there (billed at it).
    price: Price | None = None
    usage: JobUsage | None = None
    started_at: datetime | None = None
    cancel_requested: bool = False
    submit_attempts: int = 0
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    finished_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        """The JSON shape served by the API."""
        data = self.model_dump(mode="json", exclude={"submit_attempts"})
        data["terminal"] = self.state.is_terminal
        return data

    def public_json(self) -> bytes:
        """`public()` as JSON text (UTF-8), serialized by pydantic in one pass."""
        body = self.model_dump_json(exclude=_PRIVATE_JOB_FIELDS)
        # A model's JSON is an object: `terminal` goes last, as in public().
        return body[:-1].encode() + (_TERMINAL_TRUE if self.state.is_terminal else _TERMINAL_FALSE)


_PRIVATE_JOB_FIELDS: set[str] = {"submit_attempts"}
_TERMINAL_TRUE = b',"terminal":true}'
_TERMINAL_FALSE = b',"terminal":false}'


def utcnow() -> datetime:
    return datetime.now(UTC)


#: The most jobs one `POST /v1/jobs/batch` may carry.
MAX_BATCH = 1000


class JobBatch(_Verbatim):
    """`POST /v1/jobs/batch`: independent jobs submitted together."""

    jobs: list[JobSpec] = Field(min_length=1, max_length=MAX_BATCH)


# ---------------------------------------------------------------- transfers

TransferState = Literal["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]
TRANSFER_TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


class TransferRequest(_Verbatim):
    source: CenterPath
    destination: CenterPath
    overwrite: bool = False


class TransferFile(BaseModel):
    path: str
    size: int
    sha256: str | None = None
    state: str = "pending"
    attempts: int = 0
    error: str | None = None


class TransferRecord(BaseModel):
    id: str
    owner: str
    state: TransferState = "QUEUED"
    source: CenterPath
    destination: CenterPath
    overwrite: bool = False
    bytes_total: int = 0
    bytes_done: int = 0
    files_total: int = 0
    files_done: int = 0
    files: list[TransferFile] = Field(default_factory=list)
    attempts: int = 0
    error: str | None = None
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TRANSFER_TERMINAL

    def public(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"cancel_requested"})
        data["terminal"] = self.terminal
        return data


# ---------------------------------------------------------------- centers


class SSHConfig(_Strict):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(22, ge=1, le=65535)
    login: str | None = Field(
        None,
        pattern=LOGIN_PATTERN,
        description="the center's service login (connection checks); its key is in the vault",
    )
    host_keys: list[str] = Field(
        min_length=1,
        description="pinned host public keys, 'type base64' as in a .pub or known_hosts line",
    )
    connect_timeout: Seconds = 10.0
    command_timeout: Seconds = 60.0
    keepalive_interval: Seconds = 15.0
    max_sessions: int = Field(8, ge=1, le=64, description="concurrent channels per connection")

    @field_validator("host_keys")
    @classmethod
    def _key_shape(cls, keys: list[str]) -> list[str]:
        for i, key in enumerate(keys):
            parts = key.split()
            if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
                raise ValueError(f"entry {i} must look like 'ssh-ed25519 AAAA...', got {key!r}")
        return keys


class Identity(_Strict):
    """Who a federation user is at one center. The login's SSH key is kept in the
    vault under ssh/<center>/<login> (`hpcfed vault add-key`)."""

    login: str = Field(pattern=LOGIN_PATTERN)


class SchedulerConfig(_Strict):
    work_root: str = Field(
        "~/.hpcfed", description="directory at the center that holds per-job directories"
    )
    default_queue: str | None = Field(None, pattern=SAFE_NAME_PATTERN)
    pbs_dialect: Literal["torque", "pbspro"] = "torque"


class LocalConfig(_Strict):
    work_root: str = Field("local-jobs", description="relative paths are under data_dir")
    max_running: int = Field(4, ge=1, le=1024)
    files_home: str = Field(
        "local-files", description="what {home} means in file roots here; under data_dir"
    )


class FilesConfig(_Strict):
    """The files a login may reach at a center through the gateway."""

    roots: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default_factory=lambda: ["{home}"],
        min_length=1,
        description="absolute directories, with {home} (the login's home) and {login}; "
        "relative paths in requests are under the first",
    )
    bulk_threshold: MemoryMiB = Field(
        8, description="copies this large go through OpenSSH's ssh client, e.g. '8MiB'"
    )
    openssh: bool = Field(True, description="use OpenSSH for bulk copies where it is installed")

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: list[str]) -> list[str]:
        for i, root in enumerate(roots):
            if not root.startswith(("/", "{home}")):
                raise ValueError(f"root {i} ({root!r}) must be absolute or start with {{home}}")
            if "\0" in root or ".." in root.split("/"):
                raise ValueError(f"root {i} ({root!r}) may not hold '..' or NUL")
        return roots


class CpuHardware(_Strict):
    """Figures of a partition's CPU cores, for its theoretical peak."""

    model: str = Field("", max_length=200)
    clock_ghz: float = Field(gt=0, le=20, description="sustained clock of a core")
    flops_per_cycle: float = Field(
        gt=0, le=1024, description="double-precision FLOP per core per cycle (e.g. 16 for AVX2 FMA)"
    )


class GpuHardware(_Strict):
    """Figures of one GPU model, for the theoretical peak."""

    peak_tflops: float = Field(gt=0, le=10_000, description="double-precision peak of one GPU")
    memory: MemoryMiB | None = Field(None, description="memory of one GPU, e.g. '40GiB'")


class HardwareConfig(_Strict):
    """What the scheduler cannot tell: the speed of the hardware it runs."""

    cpu: CpuHardware | None = Field(None, description="every partition's cores, unless named")
    partitions: dict[str, CpuHardware] = Field(
        default_factory=dict, description="partition (queue) name -> its cores' figures"
    )
    gpus: dict[str, GpuHardware] = Field(
        default_factory=dict, description="GPU model as the scheduler names it -> its figures"
    )

    def cpu_of(self, partition: str) -> CpuHardware | None:
        return self.partitions.get(partition) or self.cpu


class PriceConfig(_Strict):
    """What the center charges; a job is billed at the price in force when it ran."""

    currency: str = Field("CNY", pattern=r"^[A-Z]{3}$")
    core_hour: float = Field(0.0, ge=0, description="per CPU core per hour")
    gpu_hour: float = Field(0.0, ge=0, description="per GPU per hour")


class EnergyConfig(_Strict):
    pue: float = Field(1.5, ge=1.0, le=5.0, description="power usage effectiveness")
    green_share: float = Field(0.0, ge=0.0, le=1.0, description="share of renewable power, 0-1")
    carbon_intensity: float = Field(
        500.0, ge=0, le=2000, description="gCO2e per kWh of the power the center draws"
    )


class CenterConfig(_Strict):
    id: str = Field(pattern=CENTER_ID_PATTERN)
    name: str = Field("", max_length=200)
    type: Literal["slurm", "pbs", "local"]
    region: str = Field("", max_length=100)
    ssh: SSHConfig | None = None
    users: dict[str, Identity] = Field(
        default_factory=dict,
        description="federation user -> login at this center ('*': a shared login for anyone)",
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    files: FilesConfig = Field(default_factory=FilesConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    price: PriceConfig = Field(default_factory=PriceConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)

    @field_validator("users")
    @classmethod
    def _user_names(cls, users: dict[str, Identity]) -> dict[str, Identity]:
        for name in users:
            if name != "*" and not re.match(USER_PATTERN, name):
                raise ValueError(f"{name!r} is not a valid federation user name")
        return users

    @model_validator(mode="after")
    def _ssh_for_remote(self) -> CenterConfig:
        if self.type in ("slurm", "pbs") and self.ssh is None:
            raise ValueError(f"a {self.type} center needs an 'ssh' section")
        if self.type == "local" and self.ssh is not None:
            raise ValueError("a local center takes no 'ssh' section")
        if self.type == "local" and self.users:
            raise ValueError("a local center runs every job as the gateway's own user; no 'users'")
        return self

    def login_for(self, user: str) -> str | None:
        """The login `user` runs as here; None when the center does not map them."""
        identity = self.users.get(user) or self.users.get("*")
        return identity.login if identity else None


# ---------------------------------------------------------------- gateway


class ListenConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8750, ge=0, le=65535)


class StoreConfig(_Strict):
    kind: Literal["sqlite"] = "sqlite"
    path: str = Field("hpcfed.db", description="relative paths are under data_dir")


class OIDCProvider(_Strict):
    """An external OpenID Connect provider whose access tokens the gateway accepts."""

    issuer: str = Field(min_length=1, description="must equal the token's 'iss'")
    audience: str = Field(min_length=1, description="must be in the token's 'aud'")
    jwks_file: str | None = Field(None, description="JWKS document; relative to data_dir")
    jwks_url: str | None = Field(None, pattern=r"^https?://\S+$")
    jwks_refresh: Seconds = Field(600.0, description="how long fetched keys are trusted")
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]] = (
        Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"], min_length=1)
    )
    user_claim: str = Field("preferred_username", description="claim holding the user name")
    roles_claim: str = Field("roles", description="claim holding a list of hpcfed roles")
    centers_claim: str = Field("hpcfed_centers", description="centers a center-admin runs")
    default_roles: list[Role] = Field(
        default_factory=list, description="roles given when the token names none"
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> OIDCProvider:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of jwks_file and jwks_url")
        return self


class AuthConfig(_Strict):
    issuer: str = Field("hpcfed", min_length=1, description="'iss' of tokens this gateway signs")
    audience: str = Field("hpcfed", min_length=1, description="'aud' of tokens it signs")
    default_ttl: Seconds = Field(8 * 3600.0, description="lifetime of an issued token")
    max_ttl: Seconds = Field(30 * 86400.0, description="the longest lifetime one may ask for")
    leeway: Seconds = Field(30.0, description="clock skew allowed on exp and nbf")
    bootstrap_user: str | None = Field(
        None,
        pattern=USER_PATTERN,
        description="if set, keep a valid token for this user in <data_dir>/client-token",
    )
    bootstrap_roles: list[Role] = Field(default_factory=lambda: ["researcher"], min_length=1)
    oidc: list[OIDCProvider] = Field(default_factory=list)


class VaultConfig(_Strict):
    path: str = Field("vault.json", description="the encrypted secrets; relative to data_dir")
    master_key_file: str = Field(
        "master.key", description="mode 0600; used when master_key_env is unset"
    )
    master_key_env: str = Field("HPCFED_MASTER_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")


class LimitsConfig(_Strict):
    max_body: MemoryMiB = Field(4, description="largest request body, e.g. '4MiB'")
    max_spec: MemoryMiB = Field(
        1,
        description="largest job spec content: script (or command), arguments and "
        "environment together, e.g. '1MiB'",
    )
    max_page: MemoryMiB = Field(
        8, description="largest list page answer; a page stops early past it (next_cursor)"
    )
    max_in_flight: MemoryMiB = Field(
        16,
        description="request bodies and list pages handled at once, all users together; "
        "more wait their turn (bounds the gateway's memory)",
    )
    rate: float = Field(20.0, gt=0, description="requests per second per user, sustained")
    burst: int = Field(100, ge=1, description="requests a user may make at once")


class AdmissionConfig(_Strict):
    """When an access evaluation admits a center (see docs/evaluation.md)."""

    required: bool = Field(
        True, description="placed jobs go only to admitted centers (local centers need none)"
    )
    min_score: float = Field(80.0, ge=0, le=100, description="weighted share of checks passed")
    max_ssh_latency_ms: float = Field(250.0, gt=0, description="median SSH command round trip")
    min_bandwidth_mb_s: float = Field(5.0, ge=0, description="upload and download, MB/s")
    min_gflops_per_core: float = Field(0.01, ge=0, description="the compute probe's figure")
    job_timeout: Seconds = Field(180.0, description="how long a probe job may take to end")


class PlacementConfig(_Strict):
    default_preference: Literal["fastest", "cheapest", "greenest", "near_data"] = "fastest"


class ComputingPowerConfig(_Strict):
    cache_ttl: Seconds = Field(10.0, description="how long a center's live load is reused")
    availability_window: Seconds = Field(
        7 * 86400.0, description="how far back availability counts probe outcomes"
    )


class HealthConfig(_Strict):
    probe_interval: Seconds = Field(15.0, description="how often every center is probed")
    probe_timeout: Seconds = Field(10.0, description="how long one center's probe may take")
    down_after: int = Field(2, ge=1, description="consecutive failed probes before down")
    up_after: int = Field(1, ge=1, description="consecutive good probes before up again")
    degraded_latency_ms: float = Field(
        1000.0, gt=0, description="SSH p50 above this (or an unreadable root): degraded"
    )
    degraded_after_failed_submissions: int = Field(
        3, ge=1, description="this many failed submissions in a row (no answer): degraded"
    )
    window: Seconds = Field(900.0, description="for error rate and latency percentiles")


class GatewayConfig(_Strict):
    data_dir: str = Field("~/.local/share/hpcfed", description="overridden by HPCFED_DATA_DIR")
    listen: ListenConfig = Field(default_factory=ListenConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    vault: VaultConfig = Field(default_factory=VaultConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    audit_log: str = Field("audit.log", description="JSON lines; relative to data_dir")
    poll_interval: Seconds = 2.0
    unaccounted_after: Seconds = Field(
        600.0,
        description="a job its center stops listing, with nothing there confirming its end, "
        "is shown as UNKNOWN (native state UNACCOUNTED) after this long; never as ended",
    )
    submit_timeout: Seconds = Field(30.0, description="how long POST /v1/jobs waits for a center")
    submit_attempts: int = Field(
        8,
        ge=1,
        description="a job whose submission's outcome stays unknown is sent again, 5 s after "
        "the first failure and twice as long after each next one (at most 5 min); after "
        "this many attempts, and once its center shows it does not have it, it is FAILED",
    )
    center_files: list[str] = Field(
        default_factory=list, description="center YAML files or globs, relative to this file"
    )
    default_center: str | None = Field(
        None,
        pattern=CENTER_ID_PATTERN,
        description="where `center: auto` goes when the spec has no `placement` and this "
        "center can take the job; unset: placement chooses",
    )
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    computing_power: ComputingPowerConfig = Field(default_factory=ComputingPowerConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
