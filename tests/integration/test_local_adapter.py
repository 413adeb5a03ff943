"""The local center's adapter under concurrent use: real processes on this machine."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from adapters.base import JobRequest
from adapters.local.adapter import LocalAdapter


async def test_concurrent_submissions_and_status_ticks_start_each_job_once(
    tmp_path: Path,
) -> None:
    adapter = LocalAdapter("local", tmp_path / "work", max_running=2)
    runs = tmp_path / "runs"
    runs.mkdir()
    ids = [str(uuid.uuid4()) for _ in range(8)]

    async def submit(gid: str) -> str:
        job = JobRequest(gateway_id=gid, name="once", script=f"echo ran >> {runs / gid}\n")
        return await adapter.submit(job)

    async def tick() -> None:
        for _ in range(20):
            await adapter.status_many({gid: gid for gid in ids})

    native = await asyncio.gather(*(submit(g) for g in ids), tick(), tick())
    assert native[: len(ids)] == ids
    async with asyncio.timeout(60):
        while True:
            statuses = await adapter.status_many({gid: gid for gid in ids})
            if len(statuses) == len(ids) and all(s.state.is_terminal for s in statuses.values()):
                break
            await asyncio.sleep(0.05)
    assert {s.state.value for s in statuses.values()} == {"COMPLETED"}
    for gid in ids:
        assert (runs / gid).read_text() == "ran\n", gid
