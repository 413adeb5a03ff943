"""Confining user paths to the roots a center allows a login.

Pure functions: the lexical checks that refuse a path before anything reaches
the center, and the containment test applied again to the path's real location
(symlinks followed) as the center reports it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

#: POSIX's usual limits: NAME_MAX and PATH_MAX, in bytes.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


class PathRefused(ValueError):
    """A path that names nothing a user may touch; `field` names the request field."""

    def __init__(self, message: str, field: str = "path", *, outside: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.outside = outside  # True: well formed, but its real location leaves the roots


def expand_root(template: str, *, home: str, login: str) -> str:
    """'{home}/x', '/scratch/{login}' -> an absolute, normalized root."""
    root = template.replace("{home}", home).replace("{login}", login)
    if not root.startswith("/"):
        raise ValueError(f"root {template!r} does not expand to an absolute path: {root!r}")
    return posixpath.normpath(root)


def within(path: str, root: str) -> bool:
    """Whether `path` is `root` or below it (both absolute and normalized)."""
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def check_form(path: str, field: str = "path") -> None:
    """Refuse what no root can hold, whatever the roots are."""
    if not isinstance(path, str) or path == "":
        raise PathRefused(f"{field}: must be a non-empty path", field)
    if "\0" in path:
        raise PathRefused(f"{field}: contains a NUL byte", field)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise PathRefused(f"{field}: contains a control character", field)
    if "\\" in path:
        raise PathRefused(f"{field}: contains a backslash; use '/' between names", field)
    encoded = path.encode("utf-8", errors="surrogateescape")
    if len(encoded) > MAX_PATH_BYTES:
        raise PathRefused(f"{field}: longer than {MAX_PATH_BYTES} bytes", field)
    if path.startswith("~"):
        raise PathRefused(
            f"{field}: '~' forms are not understood; give a path relative to your first root "
            "or an absolute path inside a root",
            field,
        )
    for part in path.split("/"):
        if part == "..":
            raise PathRefused(f"{field}: '..' is not allowed in a path", field)
        if len(part.encode("utf-8", errors="surrogateescape")) > MAX_NAME_BYTES:
            raise PathRefused(f"{field}: a name is longer than {MAX_NAME_BYTES} bytes", field)


def confine(path: str, roots: Sequence[str], field: str = "path") -> str:
    """The absolute, normalized form of `path`, which must lie inside one of `roots`.

    A relative path is taken relative to the first root. This is the lexical
    check; the caller checks the real location again at the center.
    """
    if not roots:
        raise PathRefused(f"{field}: this center allows you no file roots", field)
    check_form(path, field)
    full = path if path.startswith("/") else posixpath.join(roots[0], path)
    full = posixpath.normpath(full)
    if full.startswith("//"):  # POSIX keeps a leading '//'; it means '/' on Linux
        full = "/" + full.lstrip("/")
    if not any(within(full, root) for root in roots):
        shown = ", ".join(roots)
        raise PathRefused(
            f"{field}: {path!r} is outside your roots at this center ({shown})",
            field,
            outside=True,
        )
    return full


def check_real(real: str, real_roots: Sequence[str], shown: str, field: str = "path") -> None:
    """Refuse a path whose real location (symlinks followed) leaves the roots."""
    if not any(within(real, root) for root in real_roots):
        raise PathRefused(
            f"{field}: {shown!r} leads outside your roots at this center (through a symbolic link)",
            field,
            outside=True,
        )


def relative_to(path: str, root: str) -> str:
    """`path` below `root`, as a relative path ('' for the root itself)."""
    if path == root:
        return ""
    return path[len(root) :].lstrip("/") if within(path, root) else path
