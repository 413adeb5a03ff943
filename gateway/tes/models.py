"""The GA4GH TES v1.1 documents a client sends (`tesTask` and its parts), as the
gateway validates them: types as the schema says, paths absolute and without `..`,
the fields a server fills (`id`, `state`, `logs`, `creation_time`) taken and
ignored, any other unknown field refused, naming it."""

from __future__ import annotations

import posixpath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.base import ENV_NAME_RE

#: The most one `content` input may hold (the specification asks for at least 128 KiB).
MAX_CONTENT = 1 << 20
#: What a TES path may hold: no NUL, no newline (a path is one line of the job's logs).
_PATH_CHARS = r"^/[^\x00\n\r]*$"

TesState = Literal[
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "PREEMPTED",
    "CANCELING",
]
TES_STATES: tuple[str, ...] = TesState.__args__  # type: ignore[attr-defined]
View = Literal["MINIMAL", "BASIC", "FULL"]
FileType = Literal["FILE", "DIRECTORY"]

TesPath = Annotated[str, Field(min_length=2, max_length=4096, pattern=_PATH_CHARS)]
Text = Annotated[str, Field(max_length=65536)]
TagKey = Annotated[str, Field(max_length=256)]
TagValue = Annotated[str, Field(max_length=4096)]


def clean_path(value: str) -> str:
    """A TES path as the task names it, refused when it climbs (`..`) or names `/`."""
    if any(part == ".." for part in value.split("/")):
        raise ValueError("must not contain '..'")
    normal = posixpath.normpath(value)
    if normal == "/" or normal.startswith("//"):
        raise ValueError("must name a file or directory below '/'")
    return normal


class _Tes(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TesInput(_Tes):
    name: Text | None = None
    description: Text | None = None
    url: Annotated[str, Field(min_length=1, max_length=8192)] | None = None
    path: TesPath
    type: FileType = "FILE"
    content: Annotated[str, Field(max_length=MAX_CONTENT)] | None = None
    streamable: bool | None = None

    _path = field_validator("path")(classmethod(lambda cls, v: clean_path(v)))

    @model_validator(mode="after")
    def _source(self) -> TesInput:
        if not self.content and not self.url:
            raise ValueError("give 'url' or 'content'")
        if self.content and self.type == "DIRECTORY":
            raise ValueError("'content' makes a FILE, not a DIRECTORY")
        if self.content is not None and "\0" in self.content:
            raise ValueError("content: must not contain a NUL byte")
        return self


class TesOutput(_Tes):
    name: Text | None = None
    description: Text | None = None
    url: Annotated[str, Field(min_length=1, max_length=8192)]
    path: TesPath
    path_prefix: TesPath | None = None
    type: FileType = "FILE"

    _path = field_validator("path")(classmethod(lambda cls, v: clean_path(v)))

    @model_validator(mode="after")
    def _prefix(self) -> TesOutput:
        if has_wildcard(self.path):
            if not self.path_prefix:
                raise ValueError("path_prefix: required when 'path' holds wildcards")
            if not self.path.startswith(self.path_prefix):
                raise ValueError("path_prefix: must be a prefix of 'path'")
        return self


def has_wildcard(path: str) -> bool:
    """Whether a path holds POSIX pattern characters (`*`, `?`, `[`)."""
    return any(c in path for c in "*?[")


class TesResources(_Tes):
    cpu_cores: int | None = Field(None, ge=1, le=100_000)
    preemptible: bool | None = None
    ram_gb: float | None = Field(None, gt=0, le=1 << 20)
    disk_gb: float | None = Field(None, gt=0, le=1 << 30)
    zones: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=64
    )
    backend_parameters: dict[str, Annotated[str, Field(max_length=4096)]] | None = Field(
        None, max_length=64
    )
    backend_parameters_strict: bool | None = None

    @field_validator("ram_gb", "disk_gb", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        # JSON does not tell 8 from 8.0: both are a number of GB.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class TesExecutor(_Tes):
    image: Annotated[str, Field(min_length=1, max_length=1024)]
    command: list[Annotated[str, Field(max_length=65536)]] = Field(min_length=1, max_length=4096)
    workdir: TesPath | None = None
    stdin: TesPath | None = None
    stdout: TesPath | None = None
    stderr: TesPath | None = None
    env: dict[str, Annotated[str, Field(max_length=65536)]] | None = Field(None, max_length=1024)
    ignore_error: bool | None = None

    @field_validator("workdir", "stdin", "stdout", "stderr")
    @classmethod
    def _clean(cls, value: str | None) -> str | None:
        return clean_path(value) if value is not None else None

    @field_validator("command")
    @classmethod
    def _no_nul(cls, words: list[str]) -> list[str]:
        for i, word in enumerate(words):
            if "\0" in word:
                raise ValueError(f"word {i} contains a NUL byte")
        return words

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (env or {}).items():
            if not ENV_NAME_RE.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if "\0" in value:
                raise ValueError(f"value of {key} contains a NUL byte")
        return env


class TesTask(_Tes):
    """`POST /tasks`: what a client asks to run."""

    name: Annotated[str, Field(max_length=4096)] | None = None
    description: Annotated[str, Field(max_length=65536)] | None = None
    inputs: list[TesInput] | None = Field(None, max_length=256)
    outputs: list[TesOutput] | None = Field(None, max_length=256)
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1, max_length=64)
    volumes: list[TesPath] | None = Field(None, max_length=64)
    tags: (
        dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=4096)]] | None
    ) = Field(None, max_length=256)
    # Filled by the server; a client may send them back (they are ignored).
    id: Any = None
    state: Any = None
    logs: Any = None
    creation_time: Any = None

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, volumes: list[str] | None) -> list[str] | None:
        return [clean_path(v) for v in volumes] if volumes is not None else None

    def document(self) -> dict[str, Any]:
        """The task as the gateway keeps it: what the client gave, without the fields
        the server fills."""
        return self.model_dump(
            mode="json", exclude_none=True, exclude={"id", "state", "logs", "creation_time"}
        )
