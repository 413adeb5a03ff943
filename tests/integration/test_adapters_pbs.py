"""PbsAdapter (Torque dialect) against the testbed's PBS-dialect center: Slurm driven
through its Torque-compatible qsub/qstat/qdel."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from adapters.base import JobState
from adapters.batch.jobdir import JobDir
from adapters.pbs.adapter import PbsAdapter
from adapters.pbs.commands import build_qstat_command
from adapters.pbs.parse import parse_torque_qstat
from adapters.transport.ssh import SSHPool
from tests.integration._adapter_helpers import (  # noqa: F401 - pool_fixture provides `pool`
    WalltimeJob,
    await_walltime_kill_is_timeout,
    check_array_of_four,
    check_bad_queue_is_rejected_naming_it,
    check_dependent_job_waits_for_its_parent,
    check_sleep_is_timed,
    finished,
    job,
    pool_fixture,
    target,
    wait_for_status,
    walltime_job_started,
)
from tests.testbed import Testbed

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def walltime_job(
    request: pytest.FixtureRequest, testbed: Testbed
) -> AsyncIterator[WalltimeJob | None]:
    """The walltime test's job, submitted as the module starts (_adapter_helpers.py)."""
    async with walltime_job_started(
        request, lambda pool: PbsAdapter(target(testbed, "centerc"), pool, dialect="torque")
    ) as submitted:
        yield submitted


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
    # The job we cancel asks for the whole node: a job holding one core makes it wait,
    # whether or not the module's walltime job still holds another.
    filler = job("sleep 300", walltime_seconds=600)
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
    spec = job("sleep 60")  # still listed when qstat is read twice
    native_id = await centerc.submit(spec)
    assert await centerc.find_by_gateway_id([spec.gateway_id]) == {spec.gateway_id: native_id}
    jobs_before = (await centerc.run("qstat")).stdout.decode().count("\n")
    assert await centerc.submit(spec) == native_id
    # No second qsub: the retry found `native_id` and the center has no more jobs.
    assert (await centerc.run("qstat")).stdout.decode().count("\n") == jobs_before
    await centerc.cancel(native_id, spec.gateway_id)


async def test_bad_queue_is_rejected_naming_it_with_the_message_qsub_printed_on_stdout(
    centerc: PbsAdapter,
) -> None:
    error = await check_bad_queue_is_rejected_naming_it(centerc)
    assert "qsub job.sh" in error.command
    assert "There was an error" not in error.stderr  # the wrapper's own words left out


async def test_array_of_four_elements_all_complete_with_their_own_output(
    centerc: PbsAdapter,
) -> None:
    await check_array_of_four(centerc)


async def test_cancelled_array_ends_cancelled_keeping_what_had_ended(centerc: PbsAdapter) -> None:
    spec = job('[ "$HPCFED_ARRAY_INDEX" = 0 ] && exit 0\nsleep 300', array="0-2")
    native_id = await centerc.submit(spec)

    def started(status) -> bool:
        states = [e.state for e in status.elements]
        return states[:1] == [JobState.COMPLETED] and states[1:] == [JobState.RUNNING] * 2

    try:
        await wait_for_status(centerc, native_id, spec.gateway_id, started)
    finally:
        await centerc.cancel(native_id, spec.gateway_id)
    status = await wait_for_status(centerc, native_id, spec.gateway_id, finished)
    assert [e.state for e in status.elements] == [
        JobState.COMPLETED,
        JobState.CANCELLED,
        JobState.CANCELLED,
    ]
    assert status.state is JobState.CANCELLED


async def test_dependent_job_stays_pending_until_its_parent_completed(
    centerc: PbsAdapter,
) -> None:
    await check_dependent_job_waits_for_its_parent(centerc)


async def test_a_finished_job_says_when_it_started_and_ended(centerc: PbsAdapter) -> None:
    # The wrapper's `C` says neither how nor exactly when: job.sh's `times` tell.
    status = await check_sleep_is_timed(centerc)
    command = build_qstat_command([status.native_id], "torque")
    listed = parse_torque_qstat((await centerc.run(command)).stdout.decode())[status.native_id]
    # qstat's own mtime/ctime (whole seconds, the wrapper's start and end) agree.
    assert listed.started_at is not None and listed.ended_at is not None
    assert abs(listed.started_at - status.started_at) <= 1.5  # type: ignore[operator]
    assert abs(listed.ended_at - status.ended_at) <= 1.5  # type: ignore[operator]
    # Read as UTC because the command asks qstat for UTC, whatever the login's zone.
    elsewhere = "export TZ=Asia/Shanghai; "
    shifted = (await centerc.run(f"{elsewhere}qstat -f {status.native_id}")).stdout.decode()
    assert parse_torque_qstat(shifted)[status.native_id].started_at == listed.started_at + 8 * 3600
    pinned = (await centerc.run(elsewhere + command)).stdout.decode()
    assert parse_torque_qstat(pinned)[status.native_id].started_at == listed.started_at


# Last: its job, submitted as the module started, outlives its walltime meanwhile.
async def test_job_past_its_walltime_ends_in_timeout(
    centerc: PbsAdapter, walltime_job: WalltimeJob | None
) -> None:
    # Slurm's qstat says only "C": job.sh's trap of the scheduler's SIGTERM tells.
    status = await await_walltime_kill_is_timeout(centerc, walltime_job)
    assert status.native_state in ("C", "LEFT_QUEUE")
    assert "terminated by the scheduler" in (status.reason or "")
    assert "walltime of 60 s exceeded" in (status.reason or "")
