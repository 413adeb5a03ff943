"""Every error an adapter raises derives from `AdapterError`; messages never carry
secrets and no error carries an HTTP status. The gateway maps each kind to a domain
error (gateway/errors.py), and the HTTP API each code to its status.
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
    """A file operation refused by the file system; `code` names the kind for the API
    (whose table gives each code its answer), `field` the request field at fault."""

    code = "file_error"

    def __init__(self, message: str, *, center: str | None = None, field: str = "path") -> None:
        super().__init__(message, center=center)
        self.field = field


class FileNotFound(FileError):
    """No file or directory at the path."""

    code = "file_not_found"


class PathConflict(FileError):
    """The request conflicts with where the path is: a root, or inside the other path."""

    code = "path_conflict"


class FileExists(FileError):
    """Something is at the path already, and the request does not replace it."""

    code = "file_exists"


class NotADirectory(FileError):
    """The path (or one of its parents) is a file where a directory is needed."""

    code = "not_a_directory"


class IsADirectory(FileError):
    """The path is a directory (or no regular file) where a regular file is needed."""

    code = "is_a_directory"


class DirectoryNotEmpty(FileError):
    """A directory to remove still holds entries, and the removal is not recursive."""

    code = "directory_not_empty"


class FilePermissionDenied(FileError):
    """The center's file system refuses the login access to the path."""

    code = "permission_denied"


class OffsetMismatch(FileError):
    """A resumed upload's offset is not the file's size; `size` is."""

    code = "offset_mismatch"

    def __init__(self, message: str, *, size: int, center: str | None = None) -> None:
        super().__init__(message, center=center, field="offset")
        self.size = size
