"""PbsAdapter (Torque dialect) against the testbed's PBS-dialect center: Slurm driven
through its Torque-compatible qsub/qstat/qdel."""

from __future__ import annotations

import asyncio
import socket

import pytest

from adapters.base import JobState, NativeStatus
from adapters.jobdir import JobDir
from adapters.pbs import PbsAdapter
from adapters.ssh import SSHPool
from tests.integration._adapter_helpers import (  # noqa: F401 - pool_fixture provides `pool`
    job,
    pool_fixture,
    target,
    wait_for_status,
)
from tests.testbed import Testbed

pytestmark = pytest.mark.integration


def finished(status: NativeStatus) -> bool:
    return status.state.is_terminal


@pytest.fixture
def centerc(testbed: Testbed, pool: SSHPool) -> PbsAdapter:
    return PbsAdapter(target(testbed, "centerc"), pool, dialect="torque")


async def test_job_prints_hostname_into_the_job_dir(centerc: PbsAdapter) -> None:
    spec = job('hostname\necho "pbs=$PBS_JOBID"\necho to-stderr >&2\n')
    native_id = await centerc.submit(spec)
    status = await wait_for_status(centerc, native_id, spec.gateway_id, finished)
    assert (status.state, status.exit_code, status.native_state) == (JobState.COMPLETED, 0, "C")
    out = await centerc.read_output(native_id, spec.gateway_id, "stdout")
    lines = out.data.decode().splitlines()
    assert lines[0] == socket.gethostname()
    err = await centerc.read_output(native_id, spec.gateway_id, "stderr")
    assert err.data == b"to-stderr\n"


async def test_non_zero_exit_is_failed_with_its_code(centerc: PbsAdapter) -> None:
    spec = job("exit 4", walltime_seconds=300, memory_per_node_mib=100)
    native_id = await centerc.submit(spec)
    status = await wait_for_status(centerc, native_id, spec.gateway_id, finished)
    assert (status.state, status.exit_code) == (JobState.FAILED, 4)


async def test_cancel_of_queued_job_reaches_cancelled_state(
    testbed: Testbed, centerc: PbsAdapter
) -> None:
    cpus = testbed.center("centerc").cpus
    filler = job("sleep 300", tasks_per_node=cpus, walltime_seconds=600)
    filler_id = await centerc.submit(filler)
    try:
        spec = job("echo should never run", tasks_per_node=cpus, walltime_seconds=600)
        native_id = await centerc.submit(spec)
        queued = await wait_for_status(centerc, native_id, spec.gateway_id, lambda s: True)
        assert queued.state is JobState.QUEUED, queued
        await centerc.cancel(native_id, spec.gateway_id)
        status = await wait_for_status(centerc, native_id, spec.gateway_id, finished)
        assert status.state is JobState.CANCELLED
        await centerc.cancel(native_id, spec.gateway_id)  # again: not an error
    finally:
        await centerc.cancel(filler_id, filler.gateway_id)


async def test_cancel_of_running_job_reaches_cancelled_state(centerc: PbsAdapter) -> None:
    spec = job("echo started\nsleep 300")
    native_id = await centerc.submit(spec)
    await wait_for_status(
        centerc, native_id, spec.gateway_id, lambda s: s.state is JobState.RUNNING
    )
    await centerc.cancel(native_id, spec.gateway_id)
    status = await wait_for_status(centerc, native_id, spec.gateway_id, finished)
    assert status.state is JobState.CANCELLED


async def test_status_of_many_jobs_costs_at_most_two_commands(centerc: PbsAdapter) -> None:
    specs = [job(f"exit {i % 2}") for i in range(20)]
    native_ids = await asyncio.gather(*(centerc.submit(s) for s in specs))
    tracked = dict(zip(native_ids, (s.gateway_id for s in specs), strict=True))
    ticks = []
    async with asyncio.timeout(180):
        while True:
            before = centerc.remote_commands
            statuses = await centerc.status_many(tracked)
            ticks.append(centerc.remote_commands - before)
            if len(statuses) == 20 and all(s.state.is_terminal for s in statuses.values()):
                break
            await asyncio.sleep(1)
    assert max(ticks) <= 2, ticks
    codes = [statuses[n].exit_code for n in native_ids]
    assert codes == [i % 2 for i in range(20)]


async def test_final_state_is_learned_after_the_job_left_qstat(centerc: PbsAdapter) -> None:
    spec = job("exit 6")
    native_id = await centerc.submit(spec)
    await wait_for_status(centerc, native_id, spec.gateway_id, finished)
    gone = "2147483647"  # an id qstat has never heard of
    root = await centerc.root()
    await centerc.connection.sftp(
        lambda s: s.open(JobDir(root, spec.gateway_id).file("native_id"), "w").write(gone)
    )
    before = centerc.remote_commands
    status = (await centerc.status_many({gone: spec.gateway_id}))[gone]
    assert centerc.remote_commands - before == 2
    assert (status.state, status.exit_code, status.native_state) == (
        JobState.FAILED,
        6,
        "LEFT_QUEUE",
    )


async def test_submission_is_found_by_gateway_id_and_never_repeated(centerc: PbsAdapter) -> None:
    spec = job("true")
    native_id = await centerc.submit(spec)
    assert await centerc.find_by_gateway_id([spec.gateway_id]) == {spec.gateway_id: native_id}
    before = centerc.remote_commands
    assert await centerc.submit(spec) == native_id
    assert centerc.remote_commands == before
