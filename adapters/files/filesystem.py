"""What a center's file system offers the confined view (`adapters.files.access`):
the `FileSystem` primitives, the entries they return, the piece size data moves in.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

#: The size of the pieces data moves in, over SFTP and on local disk.
PIECE = 4 << 20


@dataclass(frozen=True)
class FileEntry:
    name: str
    path: str
    type: str  # "file", "dir", "symlink" or "other"
    size: int
    mode: int
    mtime: float

    def public(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "mode": f"{stat.S_IMODE(self.mode):04o}",
            "mtime": datetime.fromtimestamp(self.mtime, UTC).isoformat().replace("+00:00", "Z"),
        }


def entry_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class FileSystem(Protocol):
    """The primitives a center's file system offers; paths are absolute.

    Errors are Python's own: FileNotFoundError, FileExistsError, PermissionError,
    NotADirectoryError, IsADirectoryError, or OSError with an errno.
    """

    async def home(self) -> str: ...
    async def realpath(self, path: str) -> str: ...
    async def stat(self, path: str, follow: bool = True) -> FileEntry: ...
    async def listdir(self, path: str) -> list[FileEntry]: ...
    async def mkdir(self, path: str) -> None: ...
    async def rmdir(self, path: str) -> None: ...
    async def unlink(self, path: str) -> None: ...
    async def remove_tree(self, path: str) -> None: ...
    async def rename(self, source: str, target: str) -> None: ...
    async def sha256(self, path: str, size: int) -> str: ...
    def read(self, path: str, offset: int, length: int) -> AsyncIterator[bytes]: ...
    async def write(
        self, path: str, offset: int, chunks: AsyncIterator[bytes], size_hint: int | None
    ) -> int: ...
