"""The one error type of the domain: a stable code, a message, a field, details.

Nothing here knows HTTP. Each public API maps a `DomainError` to its own answer;
the HTTP API's table of codes to statuses is `gateway.http.errors`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from adapters.errors import (
    AdapterError,
    AuthenticationFailed,
    CenterUnavailable,
    FileError,
    HostKeyRejected,
    NativeJobNotFound,
    OffsetMismatch,
    SubmitRejected,
)
from adapters.files.paths import PathRefused


class DomainError(Exception):
    """A request the domain refuses or cannot carry out.

    `code` is stable ("not_found", "center_unavailable", "path_outside_roots"),
    `message` names the field first (`inputs[0].destination: ...`), `field` is the
    bracketed path of the field at fault, and `context` holds the details an
    answer carries besides those (e.g. ``center=...``); None values are dropped.
    """

    def __init__(self, code: str, message: str, field: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.context = {k: v for k, v in context.items() if v is not None}

    @property
    def details(self) -> dict[str, Any]:
        """`field` (when there is one) and `context`: what an answer carries besides
        code and message."""
        return {"field": self.field, **self.context} if self.field is not None else self.context

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class Unprocessable(DomainError):
    """The request was well formed, but what it says cannot be acted on: a field
    names a job that is not the caller's, a center that does not exist, a value
    the domain refuses. Same codes as any other error; an API may answer it apart
    from a malformed request (HTTP: 422 rather than the code's usual status)."""


def field_path(*parts: str | int) -> str:
    """A field's path as errors name it: names joined by dots, list indexes in
    brackets (`inputs[0].destination`, `jobs[3].resources.walltime`)."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "":
            path += f".{part}" if path else part
    return path


def validation_error(error: ValidationError, prefix: str = "") -> Unprocessable:
    """The first problem names its field; all of them are listed."""
    problems = []
    for item in error.errors():
        field = field_path(prefix, *item["loc"]) or "(body)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append({"field": field, "message": message})
    first = problems[0] if problems else {"field": "(body)", "message": "invalid"}
    return Unprocessable(
        "invalid_request",
        f"{first['field']}: {first['message']}",
        first["field"],
        problems=problems,
    )


def adapter_error(exc: AdapterError) -> DomainError:
    """What an adapter's error means to the caller: its code and message."""
    center = exc.center
    if isinstance(exc, FileError):
        extra = {"size": exc.size} if isinstance(exc, OffsetMismatch) else {}
        return DomainError(exc.code, exc.message, exc.field, center=center, **extra)
    if isinstance(exc, SubmitRejected):
        # The scheduler's own words when it answered; else the adapter's message,
        # which already names the center (refused before anything was sent).
        said = exc.stderr.strip()
        detail = f"center {center} refused the job: {said}" if said else exc.message
        return DomainError(
            "rejected_by_center",
            f"{exc.field}: {detail}" if exc.field else detail,
            exc.field,
            center=center,
        )
    if isinstance(exc, HostKeyRejected):
        return DomainError("center_host_key_rejected", exc.message, center=center)
    if isinstance(exc, AuthenticationFailed):
        return DomainError("center_authentication_failed", exc.message, center=center)
    if isinstance(exc, CenterUnavailable):
        return DomainError("center_unavailable", exc.message, center=center)
    if isinstance(exc, NativeJobNotFound):
        return DomainError("not_found", exc.message, center=center)
    return DomainError("center_error", exc.message, center=center)  # CommandFailed, others


def path_error(exc: PathRefused) -> DomainError:
    code = "path_outside_roots" if exc.outside else "path_refused"
    return DomainError(code, exc.message, exc.field)
