"""Files at a center, confined to the roots its login may use.

`CenterFiles` holds the policy every center shares: which paths a user may
name (`adapters.files.paths`), what each operation means, and how failures are
reported. A `FileSystem` backend (`adapters.files.filesystem`) does the work:
`adapters.files.local.LocalFS` for the embedded center,
`adapters.transport.sftp.SFTPFS` for centers reached over SSH.

Data moves in bounded pieces: a read yields chunks, a write consumes an async
iterator of chunks, so no file is ever held whole in memory.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import AsyncIterator, Sequence

from adapters.errors import (
    DirectoryNotEmpty,
    FileError,
    FileExists,
    FileNotFound,
    FilePermissionDenied,
    IsADirectory,
    NotADirectory,
    OffsetMismatch,
    PathConflict,
)
from adapters.files.filesystem import FileEntry, FileSystem
from adapters.files.paths import check_real, confine, expand_root, within

#: A listing longer than this is cut (and says so).
MAX_LISTING = 100_000


class CenterFiles:
    """One login's view of one center's files."""

    def __init__(
        self, center_id: str, login: str, fs: FileSystem, root_templates: Sequence[str]
    ) -> None:
        self.center_id = center_id
        self.login = login
        self.fs = fs
        self._templates = tuple(root_templates)
        self._roots: list[str] | None = None
        self._real_roots: list[str] | None = None

    # ------------------------------------------------------------ roots and paths

    async def roots(self) -> list[str]:
        if self._roots is None:
            home = await self.fs.home()
            self._roots = [expand_root(t, home=home, login=self.login) for t in self._templates]
        return self._roots

    async def _reals(self) -> list[str]:
        if self._real_roots is None:
            reals = []
            for root in await self.roots():
                try:
                    reals.append(await self.fs.realpath(root))
                except FileNotFoundError:
                    reals.append(root)  # not made yet: nothing below it can be a link
            self._real_roots = reals
        return self._real_roots

    async def with_root(self, extra: str) -> CenterFiles:
        """The same view with one more (absolute) root, e.g. a job's own directory."""
        view = CenterFiles(self.center_id, self.login, self.fs, self._templates)
        view._roots = [*await self.roots(), posixpath.normpath(extra)]
        return view

    async def resolve(self, path: str, field: str = "path", *, follow: bool = True) -> str:
        """The absolute path for `path`, checked against the roots lexically and by its
        real location at the center. With follow=False a final symlink is not followed."""
        if self._roots is None:
            await self.roots()
        full = confine(path, self._roots or [], field)
        head, name = posixpath.split(full) if not follow else (full, "")
        real = await self._real_location(head)
        if name:
            real = posixpath.join(real, name)
        check_real(real, await self._reals(), path, field)
        return full

    async def _real_location(self, path: str) -> str:
        """realpath of the deepest existing ancestor, with the rest appended."""
        rest: list[str] = []
        current = path
        while True:
            try:
                real = await self.fs.realpath(current)
                return posixpath.join(real, *reversed(rest)) if rest else real
            except FileNotFoundError:
                if current == "/":
                    return path
                current, tail = posixpath.split(current)
                rest.append(tail)

    def _error(self, exc: OSError, shown: str, field: str = "path") -> FileError:
        kind: type[FileError]
        if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
            kind, what = FileNotFound, "no such file or directory"
        elif isinstance(exc, FileExistsError) or exc.errno == errno.EEXIST:
            kind, what = FileExists, "already exists"
        elif isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
            kind, what = FilePermissionDenied, "permission denied at the center"
        elif isinstance(exc, NotADirectoryError) or exc.errno == errno.ENOTDIR:
            kind, what = NotADirectory, "not a directory"
        elif isinstance(exc, IsADirectoryError) or exc.errno == errno.EISDIR:
            kind, what = IsADirectory, "is a directory"
        elif exc.errno == errno.ENOTEMPTY:
            kind, what = DirectoryNotEmpty, "directory not empty"
        else:
            kind, what = FileError, exc.strerror or str(exc) or type(exc).__name__
        return kind(f"{field}: {shown}: {what}", center=self.center_id, field=field)

    # ------------------------------------------------------------ metadata

    async def stat(self, path: str, field: str = "path") -> FileEntry:
        full = await self.resolve(path, field, follow=False)
        try:
            return await self.fs.stat(full, follow=False)
        except OSError as exc:
            raise self._error(exc, path, field) from None

    async def listdir(self, path: str) -> tuple[str, list[FileEntry], bool]:
        full = await self.resolve(path)
        entry = await self._stat_followed(full, path)
        if entry.type != "dir":
            raise NotADirectory(f"path: {path}: not a directory", center=self.center_id)
        try:
            entries = await self.fs.listdir(full)
        except OSError as exc:
            raise self._error(exc, path) from None
        entries.sort(key=lambda e: e.name)
        return full, entries[:MAX_LISTING], len(entries) > MAX_LISTING

    async def _stat_followed(self, full: str, shown: str, field: str = "path") -> FileEntry:
        try:
            return await self.fs.stat(full, follow=True)
        except OSError as exc:
            raise self._error(exc, shown, field) from None

    async def mkdir(self, path: str, parents: bool = False) -> tuple[FileEntry, bool]:
        """Make a directory; returns it and whether it was created."""
        full = await self.resolve(path)
        try:
            existing = await self.fs.stat(full, follow=True)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise self._error(exc, path) from None
        if existing is not None:
            if parents and existing.type == "dir":
                return existing, False
            raise FileExists(f"path: {path}: already exists", center=self.center_id)
        missing = [full]
        if parents:
            parent = posixpath.dirname(full)
            while parent != "/" and not await self._exists(parent):
                missing.append(parent)
                parent = posixpath.dirname(parent)
        for directory in reversed(missing):
            try:
                await self.fs.mkdir(directory)
            except FileExistsError:
                if directory == full and not parents:
                    raise FileExists(
                        f"path: {path}: already exists", center=self.center_id
                    ) from None
            except OSError as exc:
                raise self._error(exc, path) from None
        return await self._stat_followed(full, path), True

    async def _exists(self, full: str) -> bool:
        try:
            await self.fs.stat(full, follow=False)
            return True
        except FileNotFoundError:
            return False
        except OSError:
            return True  # there, but not ours to look into: mkdir will say so

    async def remove(self, path: str, recursive: bool = False) -> None:
        full = await self.resolve(path, follow=False)
        if full in (self._roots or []):
            raise PathConflict(f"path: {path!r} is one of your roots; it cannot be removed")
        entry = await self.stat(path)
        try:
            if entry.type != "dir":
                await self.fs.unlink(full)
            elif recursive:
                await self.fs.remove_tree(full)
            else:
                await self.fs.rmdir(full)
        except OSError as exc:
            if entry.type == "dir" and not recursive and not isinstance(exc, PermissionError):
                # SFTP says only "failure" for a directory that is not empty.
                if await self._has_entries(full):
                    raise DirectoryNotEmpty(
                        f"path: {path}: directory not empty; remove it with recursive=true",
                        center=self.center_id,
                    ) from None
            raise self._error(exc, path) from None

    async def _has_entries(self, full: str) -> bool:
        try:
            return bool(await self.fs.listdir(full))
        except OSError:
            return False

    async def rename(self, path: str, to: str, overwrite: bool = False) -> FileEntry:
        source = await self.resolve(path, follow=False)
        target = await self.resolve(to, "to", follow=False)
        if source in (self._roots or []):
            raise PathConflict(f"path: {path!r} is one of your roots; it cannot be moved")
        if within(target, source):
            raise PathConflict(f"to: {to!r} is inside {path!r}", field="to")
        await self.stat(path)
        if await self._exists(target):
            if not overwrite:
                raise FileExists(
                    f"to: {to}: already exists; pass overwrite=true to replace it",
                    center=self.center_id,
                    field="to",
                )
        try:
            await self.fs.rename(source, target)
        except OSError as exc:
            raise self._error(exc, to, "to") from None
        return await self.fs.stat(target, follow=False)

    async def sha256(self, path: str, field: str = "path") -> tuple[str, int]:
        full = await self.resolve(path, field)
        entry = await self._stat_followed(full, path, field)
        if entry.type != "file":
            raise IsADirectory(f"{field}: {path}: not a regular file", center=self.center_id)
        try:
            return await self.fs.sha256(full, entry.size), entry.size
        except OSError as exc:
            raise self._error(exc, path, field) from None

    # ------------------------------------------------------------ data

    async def open_read(self, path: str, field: str = "path") -> tuple[str, FileEntry]:
        """Check a file may be read; its path and entry (symlinks followed)."""
        full = await self.resolve(path, field)
        entry = await self._stat_followed(full, path, field)
        if entry.type == "dir":
            raise IsADirectory(f"{field}: {path}: is a directory", center=self.center_id)
        return full, entry

    def read(self, full: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """Chunks of the file at `full` (from `open_read`), `length` bytes from `offset`."""
        return self.fs.read(full, offset, length)

    async def open_write(
        self, path: str, offset: int = 0, overwrite: bool = True, field: str = "path"
    ) -> tuple[str, bool]:
        """Check a file may be written at `offset`; its path and whether it exists."""
        full = await self.resolve(path, field)
        try:
            entry: FileEntry | None = await self.fs.stat(full, follow=True)
        except FileNotFoundError:
            entry = None
        except OSError as exc:
            raise self._error(exc, path, field) from None
        if entry is not None and entry.type == "dir":
            raise IsADirectory(f"{field}: {path}: is a directory", center=self.center_id)
        if entry is not None and not overwrite and offset == 0:
            raise FileExists(
                f"{field}: {path}: already exists; pass overwrite=true to replace it",
                center=self.center_id,
                field=field,
            )
        size = entry.size if entry is not None else 0
        if offset > size:
            raise OffsetMismatch(
                f"offset: {offset} is past the end of {path} ({size} bytes); resume from {size}",
                size=size,
                center=self.center_id,
            )
        parent = posixpath.dirname(full)
        try:
            parent_entry = await self.fs.stat(parent, follow=True)
        except FileNotFoundError:
            raise FileNotFound(
                f"{field}: {path}: the directory {parent} does not exist",
                center=self.center_id,
                field=field,
            ) from None
        except OSError as exc:
            raise self._error(exc, path, field) from None
        if parent_entry.type != "dir":
            raise NotADirectory(f"{field}: {parent} is not a directory", center=self.center_id)
        return full, entry is not None

    async def write(
        self,
        full: str,
        chunks: AsyncIterator[bytes],
        offset: int = 0,
        size_hint: int | None = None,
        shown: str = "",
    ) -> int:
        """Cut the file at `offset` and write `chunks` from there; bytes written."""
        try:
            return await self.fs.write(full, offset, chunks, size_hint)
        except OSError as exc:
            raise self._error(exc, shown or full) from None

    async def walk(self, path: str, field: str = "path") -> tuple[str, list[tuple[str, FileEntry]]]:
        """Every file below a directory (or the file itself) as (relative path, entry);
        symbolic links are not followed and are skipped."""
        full = await self.resolve(path, field)
        top = await self._stat_followed(full, path, field)
        if top.type != "dir":
            return full, [("", top)]
        found: list[tuple[str, FileEntry]] = []
        pending = [""]
        while pending:
            rel = pending.pop()
            try:
                entries = await self.fs.listdir(posixpath.join(full, rel) if rel else full)
            except OSError as exc:
                raise self._error(exc, posixpath.join(path, rel), field) from None
            for entry in entries:
                child = posixpath.join(rel, entry.name) if rel else entry.name
                if entry.type == "dir":
                    found.append((child, entry))
                    pending.append(child)
                elif entry.type == "file":
                    found.append((child, entry))
        return full, sorted(found, key=lambda item: item[0])
