"""The checks that move data through the files API: staging in and out around a job,
and the bandwidth each way. Both work in the evaluation's own directory."""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import AsyncIterator, Sequence

from adapters.files.access import CenterFiles
from adapters.files.filesystem import PIECE
from gateway.centers.evaluation.context import CALL_TIMEOUT, CheckFailed, Context, Evidence, bounded
from gateway.centers.evaluation.jobs import run_one_job
from gateway.centers.evaluation.verdict import num, threshold_failures

STAGING_SIZE = 1 << 20
#: Large enough to take the OpenSSH bulk path of remote centers (files.bulk_threshold).
BANDWIDTH_SIZE = 32 << 20
#: The longest one bulk copy of BANDWIDTH_SIZE may take.
BULK_TIMEOUT = 120.0


async def _chunks(pieces: Sequence[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def upload(files: CenterFiles, path: str, pieces: Sequence[bytes], limit: float) -> int:
    full, _ = await bounded(files.open_write(path), f"opening {path}")
    size = sum(len(p) for p in pieces)
    return await bounded(
        files.write(full, _chunks(pieces), size_hint=size, shown=path), f"writing {path}", limit
    )


async def _download(files: CenterFiles, path: str, limit: float) -> tuple[str, int]:
    """(sha256, size) of the file as read back through the files API."""
    full, entry = await bounded(files.open_read(path), f"opening {path}")
    digest, size = hashlib.sha256(), 0

    async def read() -> None:
        nonlocal size
        async for block in files.read(full, 0, entry.size):
            digest.update(block)
            size += len(block)

    await bounded(read(), f"reading {path}", limit)
    return digest.hexdigest(), size


async def _read_text(files: CenterFiles, path: str) -> str:
    full, entry = await bounded(files.open_read(path), f"opening {path}")
    blocks: list[bytes] = []

    async def read() -> None:
        async for block in files.read(full, 0, min(entry.size, 1 << 16)):
            blocks.append(block)

    await bounded(read(), f"reading {path}")
    return b"".join(blocks).decode(errors="replace")


def _copy_path(files: CenterFiles, size: int) -> str:
    """Which way a copy of `size` bytes goes: OpenSSH's bulk path, SFTP, or local disk."""
    fs = files.fs
    if getattr(fs, "openssh", None) is not None and size >= getattr(fs, "bulk_threshold", size + 1):
        return "openssh"
    return "sftp" if hasattr(fs, "connection") else "local"


def _random_pieces(size: int) -> tuple[list[bytes], str]:
    pieces = [os.urandom(min(PIECE, size - at)) for at in range(0, size, PIECE)]
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return pieces, digest.hexdigest()


async def files_staging(ctx: Context, ev: Evidence) -> str:
    files = ctx.files
    directory = await ctx.workdir()
    data_path = posixpath.join(directory, "staged.bin")
    out_path = posixpath.join(directory, "staged.sha256")
    pieces, local = _random_pieces(STAGING_SIZE)
    ev.update(directory=directory, size=STAGING_SIZE, sha256=local)
    await upload(files, data_path, pieces, CALL_TIMEOUT)
    remote, _ = await bounded(files.sha256(data_path), "the checksum at the center")
    ev["files_sha256"] = remote
    if remote != local:
        raise CheckFailed(f"files.sha256 says {remote}, the upload was {local}")
    job = await run_one_job(
        ctx,
        ev,
        "sha256sum",
        script="sha256sum staged.bin > staged.sha256\n",
        working_dir=await ctx.workdir_full(),
    )
    said = await _read_text(files, out_path)
    ev["job_output"] = said.strip()[:200]
    job_sum = said.split()[0] if said.split() else ""
    if job_sum != local:
        raise CheckFailed(f"the job computed {job_sum or 'nothing'}, the upload was {local}")
    return f"1 MiB staged in, checksummed by job {job.native_id} and read back: sums agree"


async def files_bandwidth(ctx: Context, ev: Evidence) -> str:
    files = ctx.files
    path = posixpath.join(await ctx.workdir(), "bandwidth.bin")
    pieces, local = _random_pieces(BANDWIDTH_SIZE)
    ev.update(size=BANDWIDTH_SIZE, path=path, copy=_copy_path(files, BANDWIDTH_SIZE), sha256=local)
    started = time.perf_counter()
    await upload(files, path, pieces, BULK_TIMEOUT)
    up_seconds = time.perf_counter() - started
    del pieces
    remote, _ = await bounded(files.sha256(path), "the checksum at the center")
    started = time.perf_counter()
    back, size = await _download(files, path, BULK_TIMEOUT)
    down_seconds = time.perf_counter() - started
    up, down = _rate(BANDWIDTH_SIZE, up_seconds), _rate(size, down_seconds)
    ev.update(
        upload_seconds=round(up_seconds, 3),
        download_seconds=round(down_seconds, 3),
        upload_mb_s=up,
        download_mb_s=down,
        files_sha256=remote,
        download_sha256=back,
    )
    if remote != local or back != local or size != BANDWIDTH_SIZE:
        raise CheckFailed(
            f"checksums disagree: sent {local}, the center has {remote}, read back {back} "
            f"({size} bytes)"
        )
    ctx.figures.upload_mb_s, ctx.figures.download_mb_s = up, down
    unmet = threshold_failures(ctx.figures, ctx.admission).get("files.bandwidth")
    if unmet:
        raise CheckFailed("; ".join(unmet))
    return f"upload {num(up)} MB/s, download {num(down)} MB/s (32 MiB, sha256 verified)"


def _rate(size: int, seconds: float) -> float:
    return round(size / 1e6 / max(seconds, 1e-6), 2)
