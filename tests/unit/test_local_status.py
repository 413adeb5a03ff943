"""The local center's statuses say when each job (and each array element) started and
ended running, from the `times` its job.sh wrote: real processes, no scheduler."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.base import JobRequest, JobState, NativeStatus
from adapters.local.adapter import LocalAdapter

DEADLINE = 30.0  # seconds a short local job may take to reach the awaited state


def spec(script: str, **fields: Any) -> JobRequest:
    return JobRequest(gateway_id=str(uuid.uuid4()), name="t", script=script, **fields)


async def wait_for(
    adapter: LocalAdapter, native_id: str, done: Callable[[NativeStatus], bool]
) -> NativeStatus:
    """Poll as the poller does until `done` holds; fail at the deadline."""
    async with asyncio.timeout(DEADLINE):
        while True:
            status = (await adapter.status_many({native_id: native_id}))[native_id]
            if done(status):
                return status
            await asyncio.sleep(0.1)


def ended(status: NativeStatus) -> bool:
    return status.state.is_terminal or (
        bool(status.elements) and all(e.state.is_terminal for e in status.elements)
    )


async def test_a_finished_job_says_when_it_started_and_ended(tmp_path: Path) -> None:
    adapter = LocalAdapter("local", tmp_path)
    before = time.time()
    native_id = await adapter.submit(spec("sleep 2"))
    # Its start shows once job.sh wrote it, while it still runs.
    running = await wait_for(adapter, native_id, lambda s: s.started_at is not None)
    status = await wait_for(adapter, native_id, ended)
    after = time.time()
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
    assert status.started_at is not None and status.ended_at is not None
    assert before <= status.started_at < status.ended_at <= after
    assert 2.0 <= status.ended_at - status.started_at <= 6.0
    assert (running.state, running.started_at, running.ended_at) == (
        JobState.RUNNING,
        status.started_at,
        None,
    )


async def test_a_job_killed_at_its_walltime_has_an_end(tmp_path: Path) -> None:
    adapter = LocalAdapter("local", tmp_path)
    native_id = await adapter.submit(spec("sleep 30", walltime_seconds=1))
    status = await wait_for(adapter, native_id, ended)
    assert status.state is JobState.TIMEOUT
    assert status.started_at is not None and status.ended_at is not None
    assert 1.0 <= status.ended_at - status.started_at < 10.0


async def test_each_array_element_has_its_own_times(tmp_path: Path) -> None:
    adapter = LocalAdapter("local", tmp_path, max_running=1)  # one element after the other
    native_id = await adapter.submit(spec("sleep 1", array="0-1"))
    status = await wait_for(adapter, native_id, ended)
    first, second = status.elements
    assert [e.state for e in status.elements] == [JobState.COMPLETED] * 2
    times = [first.started_at, first.ended_at, second.started_at, second.ended_at]
    assert None not in times
    assert times == sorted(times) and len(set(times)) == 4  # one after the other
    assert (status.started_at, status.ended_at) == (first.started_at, second.ended_at)


async def test_cancelled_jobs_have_an_end_only_if_they_ran(tmp_path: Path) -> None:
    adapter = LocalAdapter("local", tmp_path, max_running=1)
    running = await adapter.submit(spec("touch started-here\nsleep 300"))
    queued = await adapter.submit(spec("true"))
    # Cancelled once the user's script runs (a TERM before that leaves it running).
    in_job_dir = tmp_path / "jobs" / running / "started-here"
    try:
        await wait_for(adapter, running, lambda s: in_job_dir.exists())
        await adapter.cancel(queued, queued)
        await adapter.cancel(running, running)
        never_ran = await wait_for(adapter, queued, ended)
        ran = await wait_for(adapter, running, ended)
    finally:
        await adapter.cancel(running, running)  # nothing left running, whatever happened
    assert (never_ran.state, never_ran.started_at, never_ran.ended_at) == (
        JobState.CANCELLED,
        None,
        None,
    )
    assert ran.state is JobState.CANCELLED
    assert ran.started_at is not None and ran.ended_at is not None  # job.sh's TERM trap
    assert ran.started_at <= ran.ended_at
