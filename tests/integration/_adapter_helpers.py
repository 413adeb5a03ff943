"""Shared pieces of the adapter integration tests (tests/integration/test_adapters_*.py).

They use the session `testbed` fixture from tests/conftest.py (skips outside CI when the
testbed cannot start, fails under CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from adapters.base import JobRequest, JobState, NativeStatus
from adapters.batch.adapter import JobDirAdapter
from adapters.errors import SubmitRejected
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import SSHPool, SSHTarget
from tests.testbed import Testbed

JOB_DEADLINE = 90.0  # seconds a short test job may take from submit to a final state
#: A job past its walltime ends after the limit, the scheduler's timer tick (up to a
#: minute) and KillWait (30 s): await it with room to spare.
TIMEOUT_DEADLINE = 300.0


def target(tb: Testbed, center: str, **overrides: object) -> SSHTarget:
    """The center as the gateway would configure it, with its real pinned host key."""
    fields: dict[str, object] = {
        "center_id": center,
        "host": "127.0.0.1",
        "port": tb.center(center).ssh_port,
        "login": "alice",
        "credential": KeyFile(str(tb.user_key("alice"))),
        "host_keys": (tb.host_key(center),),
        "connect_timeout": 10.0,
        "command_timeout": 30.0,
    }
    fields.update(overrides)
    return SSHTarget(**fields)  # type: ignore[arg-type]


@pytest.fixture(name="pool")
async def pool_fixture() -> AsyncIterator[SSHPool]:
    """A fresh SSHPool per test, closed afterwards (import `pool_fixture` to use `pool`)."""
    p = SSHPool()
    yield p
    await p.close()


def job(script: str | None = None, **fields: object) -> JobRequest:
    """A small job with a fresh gateway id."""
    if script is not None:
        fields["script"] = script
    fields.setdefault("name", "adapter-test")
    return JobRequest(gateway_id=str(uuid.uuid4()), **fields)  # type: ignore[arg-type]


async def wait_for_status(
    adapter: JobDirAdapter,
    native_id: str,
    gateway_id: str,
    done: Callable[[NativeStatus], bool],
    timeout: float = JOB_DEADLINE,
) -> NativeStatus:
    """Poll status_many as the poller does until `done` holds, or fail at the deadline."""
    last: NativeStatus | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = (await adapter.status_many({native_id: gateway_id})).get(native_id)
                if last is not None and done(last):
                    return last
                await asyncio.sleep(0.3)
    except TimeoutError:
        pytest.fail(f"job {native_id} did not reach the awaited state in {timeout}s; last {last}")


def tcp_connections_to(port: int) -> int:
    """Established TCP connections from this process to 127.0.0.1:<port>."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and remote == f"0100007F:{port:04X}" and inode in inodes:
                count += 1
    return count


def finished(status: NativeStatus) -> bool:
    return status.state.is_terminal


async def check_array_of_four(adapter: JobDirAdapter) -> None:
    """An array of 4: four elements that all complete, each with its own output."""
    script = (
        'echo "element $HPCFED_ARRAY_INDEX of $HPCFED_JOB_ID"\necho "err $HPCFED_ARRAY_INDEX" >&2\n'
    )
    spec = job(script, array="0-3")
    native_id = await adapter.submit(spec)
    try:
        status = await wait_for_status(adapter, native_id, spec.gateway_id, finished)
    finally:
        await adapter.cancel(native_id, spec.gateway_id)  # a no-op once it has ended
    assert [(e.index, e.state, e.exit_code) for e in status.elements] == [
        (i, JobState.COMPLETED, 0) for i in range(4)
    ], status
    assert (status.native_id, status.state, status.exit_code) == (native_id, JobState.COMPLETED, 0)
    for i in range(4):
        out = await adapter.read_output(native_id, spec.gateway_id, "stdout", element=i)
        assert out.data.decode() == f"element {i} of {spec.gateway_id}\n"
        err = await adapter.read_output(native_id, spec.gateway_id, "stderr", element=i)
        assert err.data == f"err {i}\n".encode()
    whole = await adapter.read_output(native_id, spec.gateway_id, "stdout")
    assert (whole.data, whole.exists) == (b"", False)  # an array has no output of its own


async def check_dependent_job_waits_for_its_parent(adapter: JobDirAdapter) -> None:
    """afterok: the child stays pending while the parent runs, and starts after it ended."""
    parent = job("sleep 5\ndate +%s.%N\n")
    parent_id = await adapter.submit(parent)
    child = job("date +%s.%N\n", dependencies=[("afterok", parent_id)])
    child_id = await adapter.submit(child)
    try:
        jobs = {parent_id: parent.gateway_id, child_id: child.gateway_id}
        early = await adapter.status_many(jobs)
        if not early[parent_id].state.is_terminal:
            assert early[child_id].state is JobState.QUEUED, early[child_id]
        status = await wait_for_status(adapter, child_id, child.gateway_id, finished)
        assert status.state is JobState.COMPLETED, status
        parent_status = (await adapter.status_many({parent_id: parent.gateway_id}))[parent_id]
        assert parent_status.state is JobState.COMPLETED
    finally:
        for native_id, spec in ((child_id, child), (parent_id, parent)):
            await adapter.cancel(native_id, spec.gateway_id)
    parent_end = float((await adapter.read_output(parent_id, parent.gateway_id, "stdout")).data)
    child_start = float((await adapter.read_output(child_id, child.gateway_id, "stdout")).data)
    assert child_start >= parent_end


#: The test of a module that awaits the walltime job `walltime_job_started` submitted.
WALLTIME_TEST = "test_job_past_its_walltime_ends_in_timeout"


@dataclass(frozen=True)
class WalltimeJob:
    """A job submitted to outlive its walltime of one minute."""

    native_id: str
    gateway_id: str


@contextlib.asynccontextmanager
async def walltime_job_started(
    request: pytest.FixtureRequest, make_adapter: Callable[[SSHPool], JobDirAdapter]
) -> AsyncIterator[WalltimeJob | None]:
    """Submit the module's walltime job when the module starts, if its WALLTIME_TEST is
    among the selected tests (None otherwise); cancel it when the module ends.

    Its minute (Slurm's least walltime) and the kill after it then pass while the module's
    other tests run, and WALLTIME_TEST only awaits its end. The job holds one core of its
    center meanwhile. The fixture has its own pool: the tests' pools live on their own
    event loops.
    """
    selected = any(
        getattr(item, "module", None) is request.module
        and getattr(item, "originalname", None) == WALLTIME_TEST
        for item in request.session.items
    )
    if not selected:
        yield None
        return
    spec = job(command="sleep", arguments=["300"], walltime_seconds=60)
    pool = SSHPool()
    try:
        adapter = make_adapter(pool)
        submitted = WalltimeJob(await adapter.submit(spec), spec.gateway_id)
        try:
            yield submitted
        finally:
            await adapter.cancel(submitted.native_id, submitted.gateway_id)  # no-op once ended
    finally:
        await pool.close()


async def await_walltime_kill_is_timeout(
    adapter: JobDirAdapter, submitted: WalltimeJob | None
) -> NativeStatus:
    """The job that sleeps past its walltime of one minute ends TIMEOUT."""
    assert submitted is not None, f"{WALLTIME_TEST} runs but its job was not submitted"
    try:
        status = await wait_for_status(
            adapter,
            submitted.native_id,
            submitted.gateway_id,
            finished,
            timeout=TIMEOUT_DEADLINE,
        )
    finally:
        await adapter.cancel(submitted.native_id, submitted.gateway_id)
    assert status.state is JobState.TIMEOUT, status
    return status


async def check_bad_queue_is_rejected_naming_it(adapter: JobDirAdapter) -> SubmitRejected:
    with pytest.raises(SubmitRejected) as caught:
        await adapter.submit(job("true", queue="nosuchqueue"))
    error = caught.value
    assert (error.field, error.center) == ("queue", adapter.center_id)
    assert error.exit_status not in (None, 0)
    assert "invalid partition" in error.stderr.lower()  # the scheduler's own words
    assert error.stderr in error.message
    return error


async def check_sleep_is_timed(adapter: JobDirAdapter) -> NativeStatus:
    """A job running `sleep 2` ends COMPLETED with when it started and ended, both inside
    the window this test saw from before the submission to after the final state."""
    spec = job("sleep 2")
    before = time.time()
    native_id = await adapter.submit(spec)
    status = await wait_for_status(adapter, native_id, spec.gateway_id, finished)
    after = time.time()
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0), status
    started, ended = status.started_at, status.ended_at
    assert started is not None and ended is not None, status
    # A scheduler's times are whole seconds (job.sh's finer): the start may read as the
    # second the test's window began in.
    assert math.floor(before) <= started < ended <= after, (before, status, after)
    assert 2.0 <= ended - started <= 6.0, status
    return status
