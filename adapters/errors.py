"""Every error an adapter raises derives from `AdapterError`; messages never carry
secrets. The gateway maps each kind to its own answer (gateway/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass


class AdapterError(Exception):
    """Base of every error an adapter raises. Messages never carry secrets."""

    def __init__(self, message: str, *, center: str | None = None) -> None:
        super().__init__(message)
        self.center = center
        self.message = message


class CenterUnavailable(AdapterError):
    """The center could not be reached or did not answer in time.

    The outcome of the operation is unknown; callers must reconcile, not
    simply repeat a submission.
    """


class HostKeyRejected(AdapterError):
    """The center presented a host key that is not pinned in its config."""

    def __init__(self, message: str, *, center: str | None = None, fingerprint: str = "") -> None:
        super().__init__(message, center=center)
        self.fingerprint = fingerprint


class AuthenticationFailed(AdapterError):
    """The center refused our credentials."""


@dataclass
class CommandFailed(AdapterError):
    """A scheduler command ran and exited non-zero."""

    message: str
    command: str = ""
    exit_status: int | None = None
    stderr: str = ""
    center: str | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)


@dataclass
class SubmitRejected(CommandFailed):
    """The scheduler refused the job (bad partition, over limits, ...).

    `field` names the job spec field the scheduler's message points at
    ("queue", "resources.walltime", "account", ...), when it can be told.
    """

    field: str | None = None


class NativeJobNotFound(AdapterError):
    """The center does not know the job."""


class InvalidCall(AdapterError):
    """An adapter was asked for what no center could be: a native id not of its
    scheduler's form, an output stream other than stdout and stderr, a negative offset
    or limit, an element that is not an index. A defect of the caller (the gateway
    checks all of these first), raised before anything is sent; the gateway answers it
    as a fault of its own."""


class FileError(AdapterError):
    """A file operation refused by the file system; `code` names the kind for the API."""

    code = "file_error"
    status = 409

    def __init__(self, message: str, *, center: str | None = None, field: str = "path") -> None:
        super().__init__(message, center=center)
        self.field = field


class FileNotFound(FileError):
    code, status = "file_not_found", 404


class PathConflict(FileError):
    """The request conflicts with where the path is: a root, or inside the other path."""

    code = "path_conflict"


class FileExists(FileError):
    code, status = "file_exists", 409


class NotADirectory(FileError):
    code, status = "not_a_directory", 409


class IsADirectory(FileError):
    code, status = "is_a_directory", 409


class DirectoryNotEmpty(FileError):
    code, status = "directory_not_empty", 409


class FilePermissionDenied(FileError):
    code, status = "permission_denied", 403


class OffsetMismatch(FileError):
    code, status = "offset_mismatch", 409

    def __init__(self, message: str, *, size: int, center: str | None = None) -> None:
        super().__init__(message, center=center, field="offset")
        self.size = size
