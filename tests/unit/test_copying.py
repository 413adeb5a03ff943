"""Verified copies between two file systems: resuming a broken copy, catching bad bytes.

Both ends are real directories (`LocalFS`); the faults are injected into the stream.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.errors import CenterUnavailable
from adapters.files.access import CenterFiles
from adapters.files.local import LocalFS
from gateway.data.copying import ChecksumMismatch, copy_tree, part_path


class BreaksOnce(LocalFS):
    """Reads stop with a lost connection once, after `after` bytes."""

    def __init__(self, home: str, after: int) -> None:
        super().__init__(home)
        self.after, self.armed = after, True

    async def read(self, path: str, offset: int, length: int) -> AsyncIterator[bytes]:
        sent = 0
        async for block in super().read(path, offset, length):
            if self.armed and sent + len(block) > self.after:
                self.armed = False
                yield block[: self.after - sent]
                raise CenterUnavailable("connection lost", center="src")
            sent += len(block)
            yield block


class FlipsAByte(LocalFS):
    """Writes change the first byte they are given."""

    async def write(
        self, path: str, offset: int, chunks: AsyncIterator[bytes], size_hint: int | None
    ) -> int:
        async def flipped() -> AsyncIterator[bytes]:
            first = True
            async for chunk in chunks:
                if first and chunk:
                    chunk, first = bytes([chunk[0] ^ 1]) + chunk[1:], False
                yield chunk

        return await super().write(path, offset, flipped(), size_hint)


def _view(root: Path, fs: LocalFS, center: str) -> CenterFiles:
    root.mkdir(exist_ok=True)
    return CenterFiles(center, "user", fs, ["{home}"])


async def test_a_copy_that_breaks_off_resumes_from_what_the_destination_holds(
    tmp_path: Path,
) -> None:
    data = os.urandom(10 << 20)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "in.bin").write_bytes(data)
    src = _view(tmp_path / "a", BreaksOnce(str(tmp_path / "a"), after=6 << 20), "src")
    dst = _view(tmp_path / "b", LocalFS(str(tmp_path / "b")), "dst")
    counted: list[int] = []
    files = await copy_tree(src, "in.bin", dst, "out.bin", progress=counted.append)
    assert (tmp_path / "b" / "out.bin").read_bytes() == data
    assert files[0].attempts == 2
    assert files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert sum(counted) == len(data)


async def test_a_destination_holding_other_bytes_is_caught(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "in.bin").write_bytes(b"payload" * 1000)
    src = _view(tmp_path / "a", LocalFS(str(tmp_path / "a")), "src")
    dst = _view(tmp_path / "b", FlipsAByte(str(tmp_path / "b")), "dst")
    with pytest.raises(ChecksumMismatch):
        await copy_tree(src, "in.bin", dst, "out.bin")


async def test_a_tree_is_copied_with_its_empty_files_and_directories(tmp_path: Path) -> None:
    top = tmp_path / "a" / "tree"
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "x.txt").write_text("x")
    (top / "sub" / "empty").write_bytes(b"")
    src = _view(tmp_path / "a", LocalFS(str(tmp_path / "a")), "src")
    dst = _view(tmp_path / "b", LocalFS(str(tmp_path / "b")), "dst")
    files = await copy_tree(src, "tree", dst, "copy")
    assert sorted(f.path for f in files) == ["sub/empty", "x.txt"]
    assert (tmp_path / "b" / "copy" / "sub" / "deeper").is_dir()
    assert (tmp_path / "b" / "copy" / "x.txt").read_text() == "x"
    assert (tmp_path / "b" / "copy" / "sub" / "empty").read_bytes() == b""


async def test_a_copy_onto_its_own_source_through_a_shared_file_system_keeps_it_whole(
    tmp_path: Path,
) -> None:
    """Two centers mounting the same storage: the destination file is the source."""
    data = os.urandom(3 << 20)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "f.bin").write_bytes(data)
    one = _view(tmp_path / "shared", LocalFS(str(tmp_path / "shared")), "one")
    two = _view(tmp_path / "shared", LocalFS(str(tmp_path / "shared")), "two")
    await copy_tree(one, "f.bin", two, "f.bin", overwrite=True)
    assert (tmp_path / "shared" / "f.bin").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["f.bin"]


async def test_a_part_file_of_another_copy_is_not_trusted(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "in.bin").write_bytes(data)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / Path(part_path(str(tmp_path / "b" / "out.bin"))).name).write_bytes(b"junk")
    src = _view(tmp_path / "a", LocalFS(str(tmp_path / "a")), "src")
    dst = _view(tmp_path / "b", LocalFS(str(tmp_path / "b")), "dst")
    await copy_tree(src, "in.bin", dst, "out.bin")
    assert (tmp_path / "b" / "out.bin").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["out.bin"]
