"""The job spec a client sends: resources, staging, dependencies, placement
preferences, array, extra directives; and a batch of specs. The record the gateway
keeps is in gateway/jobs/records.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from adapters.base import ENV_NAME_RE, DependencyCondition
from gateway.apps.models import AppRequest
from gateway.fields import (
    _ARRAY_SCHEMA_PATTERN,
    _DURATION_SCHEMA,
    _MEMORY_SCHEMA,
    ARRAY_PATTERN,
    CENTER_ID_PATTERN,
    PATH_MAX_CHARS,
    SAFE_NAME_PATTERN,
    WORKDIR_PATTERN,
    CenterPath,
    Directive,
    RemotePath,
    WholeNumber,
    _path_form,
    _Verbatim,
    array_indices,
)
from gateway.units import MemoryMiB, Seconds

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
    condition: DependencyCondition = Field(
        "afterok",
        description="afterok: the job completed; afternotok: it failed, timed out or was "
        "cancelled; afterany: it ended; after: it started",
    )


class ExtraDirectives(_Verbatim):
    """Directives the spec's fields do not cover, per scheduler; used at centers of that type."""

    slurm: list[Directive] = Field(default_factory=list, max_length=32)
    pbs: list[Directive] = Field(default_factory=list, max_length=32)


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


#: Exactly one of `script`, `command` and `app` is given; `arguments` go with `command`.
_SCRIPT_OR_COMMAND: dict[str, Any] = {
    "oneOf": [
        {
            "required": ["script"],
            "properties": {
                "script": {"type": "string"},
                "command": {"type": "null"},
                "arguments": {"maxItems": 0},
                "app": {"type": "null"},
            },
        },
        {
            "required": ["command"],
            "properties": {
                "command": {"type": "string"},
                "script": {"type": "null"},
                "app": {"type": "null"},
            },
        },
        {
            "required": ["app"],
            "properties": {
                "app": {"type": "object"},
                "script": {"type": "null"},
                "command": {"type": "null"},
                "arguments": {"maxItems": 0},
            },
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
    app: AppRequest | None = Field(
        None, description="an application of the catalog (GET /v1/apps), instead of a script"
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
        given = [f for f in ("script", "command", "app") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'script', 'command' and 'app'")
        if self.arguments and self.command is None:
            raise ValueError("'arguments' goes with 'command', not with 'script'")
        return self


#: The most jobs one `POST /v1/jobs/batch` may carry.
MAX_BATCH = 1000


class JobBatch(_Verbatim):
    """`POST /v1/jobs/batch`: independent jobs submitted together."""

    jobs: list[JobSpec] = Field(min_length=1, max_length=MAX_BATCH)
