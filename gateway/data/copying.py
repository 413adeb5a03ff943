"""Copying files and trees between centers, through the gateway, verified.

Bytes flow from the source center's read stream straight into the destination
center's write (an async generator feeding a consumer), so at most a few
chunks are in memory. Each file is checked: the sha256 of what was read, taken
as it passed, must equal what the destination computes of what it wrote. A
copy that breaks off is resumed from what the destination already holds;
then both centers compute the checksum.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from adapters.errors import AdapterError, FileExists, FileNotFound, PathConflict
from adapters.files.access import CenterFiles
from adapters.files.paths import within

log = logging.getLogger("hpcfed.copying")

ATTEMPTS = 3


class ChecksumMismatch(AdapterError):
    """The destination holds other bytes than the source sent."""


@dataclass
class CopiedFile:
    path: str  # relative to the copy's top ("" when the source is one file)
    size: int
    sha256: str | None = None
    state: str = "pending"  # pending, done, failed
    attempts: int = 0
    error: str | None = None

    def public(self) -> dict[str, object]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
        }


Progress = Callable[[int], None]


async def plan(src: CenterFiles, src_path: str) -> tuple[str, list[str], list[CopiedFile]]:
    """What a copy of `src_path` consists of: its full path, the directories below it
    (relative), and its files."""
    full, found = await src.walk(src_path)
    dirs = [rel for rel, entry in found if entry.type == "dir"]
    files = [CopiedFile(rel, entry.size) for rel, entry in found if entry.type != "dir"]
    return full, dirs, files


def part_path(full: str) -> str:
    """Where a copy is written before it is verified and renamed into place: beside
    its destination, so the rename stays on one file system, and of a fixed length."""
    head, name = posixpath.split(full)
    return posixpath.join(head, ".hpcfed-part-" + hashlib.sha256(name.encode()).hexdigest()[:16])


async def copy_file(
    src: CenterFiles,
    src_full: str,
    dst: CenterFiles,
    dst_full: str,
    item: CopiedFile,
    progress: Progress = lambda n: None,
    moved: Progress = lambda n: None,
) -> str:
    """Copy one file; returns its verified sha256.

    The bytes go to a part file, renamed over the destination only once verified, so
    a destination that is the source itself (two centers sharing a file system) or a
    file a reader is using is never seen half written. A part file left by an earlier
    attempt is continued; a copy that breaks off is retried from what the part holds.
    `progress` follows the bytes the destination holds; `moved` is told of every chunk
    sent, resent ones included.
    """
    part = part_path(dst_full)
    offset = await _held(dst, part, item.size)
    progress(offset)
    digest, whole, restarted = hashlib.sha256(), offset == 0, False
    while True:
        item.attempts += 1
        passed = 0

        async def tee(start: int) -> AsyncIterator[bytes]:
            nonlocal passed
            async with contextlib.aclosing(src.read(src_full, start, item.size - start)) as read:
                async for chunk in read:
                    digest.update(chunk)  # noqa: B023 - consumed within this attempt
                    passed += len(chunk)
                    progress(len(chunk))
                    moved(len(chunk))
                    yield chunk

        try:
            # Closed whatever happens, so the source's stream (an ssh process) ends now.
            async with contextlib.aclosing(tee(offset)) as stream:
                written = await dst.write(part, stream, offset, item.size - offset)
            if offset + written != item.size:
                raise AdapterError(
                    f"{src_full}: {offset + written} of {item.size} bytes arrived",
                    center=src.center_id,
                )
        except AdapterError as exc:
            if item.attempts >= ATTEMPTS:
                raise
            log.info("copy of %s broke off (%s); resuming", src_full, exc)
            held = await _held(dst, part, item.size)
            progress(held - offset - passed)  # bytes counted but not kept are sent again
            offset, whole = held, held == 0
            if whole:
                digest = hashlib.sha256()
            continue
        got, _ = await dst.sha256(part)
        want = digest.hexdigest() if whole else (await src.sha256(src_full))[0]
        if got == want:
            break
        if whole or restarted:
            raise ChecksumMismatch(
                f"{dst_full} at center {dst.center_id} has sha256 {got}, the source {want}",
                center=dst.center_id,
            )
        # A part file of some other copy: start again from nothing, once.
        progress(-item.size)
        offset, whole, restarted, digest = 0, True, True, hashlib.sha256()
    try:
        await dst.fs.rename(part, dst_full)
    except OSError as exc:
        raise AdapterError(
            f"{dst_full} at center {dst.center_id}: cannot move the copy into place: {exc}",
            center=dst.center_id,
        ) from None
    return got


async def _held(dst: CenterFiles, part: str, size: int) -> int:
    """How much of a copy its part file holds already (0 if none, or if it is too long)."""
    try:
        held = (await dst.fs.stat(part, follow=False)).size
    except OSError:
        return 0
    return held if held <= size else 0


def check_overlap(src: CenterFiles, src_full: str, dst: CenterFiles, dst_full: str) -> None:
    """Refuse a copy into itself, or into a directory it is copying."""
    if src.center_id == dst.center_id and (
        within(dst_full, src_full) or within(src_full, dst_full)
    ):
        raise PathConflict(
            f"destination.path: {dst_full!r} overlaps the source {src_full!r}",
            center=dst.center_id,
            field="destination.path",
        )


async def copy_tree(
    src: CenterFiles,
    src_path: str,
    dst: CenterFiles,
    dst_path: str,
    *,
    overwrite: bool = False,
    planned: tuple[str, list[str], list[CopiedFile]] | None = None,
    progress: Progress = lambda n: None,
    on_file: Callable[[CopiedFile], None] = lambda f: None,
    moved: Progress = lambda n: None,
) -> list[CopiedFile]:
    """Copy a file or a directory tree; files already `done` in `planned` are kept."""
    src_full, dirs, files = planned or await plan(src, src_path)
    dst_full = await dst.resolve(dst_path, "destination.path")
    check_overlap(src, src_full, dst, dst_full)
    is_tree = not (len(files) == 1 and files[0].path == "" and not dirs)
    try:
        existing = await dst.stat(dst_full, "destination.path")
    except FileNotFound:
        existing = None
    if existing is not None and not overwrite and not any(f.state == "done" for f in files):
        raise FileExists(
            f"destination.path: {dst_path} already exists at center {dst.center_id}; "
            "pass overwrite=true to replace it",
            center=dst.center_id,
            field="destination.path",
        )
    if is_tree:
        await dst.mkdir(dst_full, parents=True)
        for rel in dirs:
            await dst.mkdir(posixpath.join(dst_full, rel), parents=True)
    for item in files:
        if item.state == "done":
            continue
        source = posixpath.join(src_full, item.path) if item.path else src_full
        target = posixpath.join(dst_full, item.path) if item.path else dst_full
        try:
            await dst.open_write(target, 0, True, "destination.path")
            item.sha256 = await copy_file(src, source, dst, target, item, progress, moved)
            item.state, item.error = "done", None
        except AdapterError as exc:
            item.state, item.error = "failed", exc.message
            on_file(item)
            raise
        on_file(item)
    return files
