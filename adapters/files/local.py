"""The gateway machine's own files, as the embedded local center's `FileSystem`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import shutil
from collections.abc import AsyncIterator

from adapters.files.filesystem import PIECE, FileEntry, entry_type


def _local_entry(path: str, st: os.stat_result) -> FileEntry:
    return FileEntry(
        name=posixpath.basename(path) or "/",
        path=path,
        type=entry_type(st.st_mode),
        size=st.st_size,
        mode=st.st_mode,
        mtime=st.st_mtime,
    )


class LocalFS:
    """The gateway machine's own files (the embedded local center)."""

    def __init__(self, home: str) -> None:
        self._home = home

    async def home(self) -> str:
        return self._home

    async def realpath(self, path: str) -> str:
        def real() -> str:
            os.stat(path)  # FileNotFoundError for a missing path, as SFTP's realpath
            return os.path.realpath(path)

        return await asyncio.to_thread(real)

    async def stat(self, path: str, follow: bool = True) -> FileEntry:
        st = await asyncio.to_thread(os.stat if follow else os.lstat, path)
        return _local_entry(path, st)

    async def listdir(self, path: str) -> list[FileEntry]:
        def scan() -> list[FileEntry]:
            with os.scandir(path) as it:
                return [_local_entry(e.path, e.stat(follow_symlinks=False)) for e in it]

        return await asyncio.to_thread(scan)

    async def mkdir(self, path: str) -> None:
        await asyncio.to_thread(os.mkdir, path, 0o755)

    async def rmdir(self, path: str) -> None:
        await asyncio.to_thread(os.rmdir, path)

    async def unlink(self, path: str) -> None:
        await asyncio.to_thread(os.unlink, path)

    async def remove_tree(self, path: str) -> None:
        await asyncio.to_thread(shutil.rmtree, path)  # never follows symlinks

    async def rename(self, source: str, target: str) -> None:
        await asyncio.to_thread(os.replace, source, target)

    async def sha256(self, path: str, size: int) -> str:
        def digest() -> str:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while block := fh.read(PIECE):
                    h.update(block)
            return h.hexdigest()

        return await asyncio.to_thread(digest)

    async def read(self, path: str, offset: int, length: int) -> AsyncIterator[bytes]:
        fh = await asyncio.to_thread(open, path, "rb")
        try:
            await asyncio.to_thread(fh.seek, offset)
            left = length
            while left > 0:
                block = await asyncio.to_thread(fh.read, min(PIECE, left))
                if not block:
                    break
                left -= len(block)
                yield block
        finally:
            await asyncio.to_thread(fh.close)

    async def write(
        self, path: str, offset: int, chunks: AsyncIterator[bytes], size_hint: int | None
    ) -> int:
        def start() -> int:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            return fd

        fd = await asyncio.to_thread(start)
        written = 0
        try:
            async for chunk in chunks:
                await asyncio.to_thread(_write_all, fd, chunk)
                written += len(chunk)
        finally:
            await asyncio.to_thread(os.close, fd)
        return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
