"""SlurmAdapter against the testbed's real Slurm centers, over the pooled SSH connection."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from adapters.base import NOT_LISTED, JobState
from adapters.batch.jobdir import JobDir, quote
from adapters.errors import SubmitRejected
from adapters.slurm.adapter import SlurmAdapter
from adapters.slurm.status import SQUEUE_FIELDS, build_squeue_command, parse_squeue
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

# The Slurm center these tests use; another Slurm center of the testbed can stand in.
CENTER = os.environ.get("HPCFED_ADAPTER_SLURM_CENTER", "centera")


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def walltime_job(
    request: pytest.FixtureRequest, testbed: Testbed
) -> AsyncIterator[WalltimeJob | None]:
    """The walltime test's job, submitted as the module starts (_adapter_helpers.py)."""
    async with walltime_job_started(
        request, lambda pool: SlurmAdapter(target(testbed, CENTER), pool)
    ) as submitted:
        yield submitted


@pytest.fixture
def slurm(testbed: Testbed, pool: SSHPool) -> SlurmAdapter:
    return SlurmAdapter(target(testbed, CENTER), pool)


async def test_job_prints_hostname_and_its_slurm_job_id(slurm: SlurmAdapter) -> None:
    spec = job('hostname\necho "job=$SLURM_JOB_ID"\necho to-stderr >&2\n')
    native_id = await slurm.submit(spec)
    status = await wait_for_status(slurm, native_id, spec.gateway_id, finished)
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
    out = await slurm.read_output(native_id, spec.gateway_id, "stdout")
    assert out.data.decode() == f"{socket.gethostname()}\njob={native_id}\n"
    assert (out.offset, out.size, out.exists) == (0, len(out.data), True)
    err = await slurm.read_output(native_id, spec.gateway_id, "stderr")
    assert err.data == b"to-stderr\n"
    tail = await slurm.read_output(native_id, spec.gateway_id, "stdout", offset=4, limit=3)
    assert (tail.data, tail.offset) == (out.data[4:7], 4)


async def test_non_zero_exit_is_failed_with_its_code(slurm: SlurmAdapter) -> None:
    spec = job("echo about to fail\nexit 3\n")
    native_id = await slurm.submit(spec)
    status = await wait_for_status(slurm, native_id, spec.gateway_id, finished)
    assert (status.state, status.exit_code, status.native_state) == (JobState.FAILED, 3, "FAILED")


async def test_command_with_hostile_arguments_and_environment(slurm: SlurmAdapter) -> None:
    args = ["; rm -rf ~", "$(id)", "`id`", 'it\'s "q"', "two\nlines"]
    spec = job(command="printf", arguments=["%s|", *args], environment={"X": "$(id); `id`"})
    native_id = await slurm.submit(spec)
    status = await wait_for_status(slurm, native_id, spec.gateway_id, finished)
    assert status.state is JobState.COMPLETED
    out = await slurm.read_output(native_id, spec.gateway_id, "stdout")
    assert out.data.decode() == "".join(f"{a}|" for a in args)


async def test_cancel_of_queued_job_reaches_cancelled_state(
    testbed: Testbed, slurm: SlurmAdapter
) -> None:
    cpus = testbed.center(CENTER).cpus
    # The job we cancel asks for the whole node: a job holding one core makes it wait,
    # whether or not the module's walltime job still holds another.
    filler = job("sleep 300", walltime_seconds=600)
    filler_id = await slurm.submit(filler)
    try:
        spec = job("echo should never run", cpus_per_task=cpus, walltime_seconds=600)
        native_id = await slurm.submit(spec)
        queued = await wait_for_status(slurm, native_id, spec.gateway_id, lambda s: True)
        assert queued.state is JobState.QUEUED, queued
        await slurm.cancel(native_id, spec.gateway_id)
        status = await wait_for_status(slurm, native_id, spec.gateway_id, finished)
        assert status.state is JobState.CANCELLED
        out = await slurm.read_output(native_id, spec.gateway_id, "stdout")
        assert not out.exists  # it never ran
        await slurm.cancel(native_id, spec.gateway_id)  # again: not an error
    finally:
        await slurm.cancel(filler_id, filler.gateway_id)


async def test_status_of_fifty_jobs_costs_at_most_two_commands(slurm: SlurmAdapter) -> None:
    specs = [job(f"echo {i}\nexit {i % 3}") for i in range(50)]
    native_ids = await asyncio.gather(*(slurm.submit(s) for s in specs))
    tracked = dict(zip(native_ids, (s.gateway_id for s in specs), strict=True))
    assert len(tracked) == 50
    ticks = []
    async with asyncio.timeout(180):
        while True:
            before = slurm.remote_commands
            statuses = await slurm.status_many(tracked)
            ticks.append(slurm.remote_commands - before)
            assert set(statuses) == set(tracked)
            if all(s.state.is_terminal for s in statuses.values()):
                break
            await asyncio.sleep(1)
    assert max(ticks) <= 2, ticks
    for spec, native_id in zip(specs, native_ids, strict=True):
        i = int(spec.script.split()[1])  # type: ignore[union-attr]
        want = (JobState.COMPLETED, 0) if i % 3 == 0 else (JobState.FAILED, i % 3)
        assert (statuses[native_id].state, statuses[native_id].exit_code) == want


async def test_final_state_is_learned_after_the_job_left_squeue(
    slurm: SlurmAdapter,
) -> None:
    # A job squeue has forgotten (past MinJobAge, no accounting): its directory says how it
    # ended. The native id 2**31-1 is one squeue has never heard of.
    spec = job("exit 5")
    native_id = await slurm.submit(spec)
    await wait_for_status(slurm, native_id, spec.gateway_id, finished)
    gone = "2147483647"
    root = await slurm.root()
    conn = slurm.connection
    await conn.sftp(
        lambda s: s.open(JobDir(root, spec.gateway_id).file("native_id"), "w").write(gone + "\n")
    )
    before = slurm.remote_commands
    status = (await slurm.status_many({gone: spec.gateway_id}))[gone]
    assert slurm.remote_commands - before == 2  # squeue, then sacct + job dir together
    assert (status.state, status.exit_code, status.native_state) == (
        JobState.FAILED,
        5,
        "LEFT_QUEUE",
    )


async def test_gone_job_without_exit_status_is_cancelled_if_we_cancelled_it_else_not_ended(
    slurm: SlurmAdapter,
) -> None:
    cancelled, vanished = job("true"), job("true")
    root = await slurm.root()

    def lay_out(sftp) -> None:  # what a cancel before start leaves, and what nothing leaves
        for spec, files in ((cancelled, {"cancelled": "cancelled\n"}), (vanished, {})):
            path = JobDir(root, spec.gateway_id).path
            sftp.mkdir(path)
            for name, text in files.items():
                with sftp.open(f"{path}/{name}", "w") as f:
                    f.write(text)

    await slurm.connection.sftp(lay_out)
    statuses = await slurm.status_many(
        {"2147483646": cancelled.gateway_id, "2147483645": vanished.gateway_id}
    )
    assert statuses["2147483646"].state is JobState.CANCELLED
    # Nothing at the center says the other ended: not ended, asked about again.
    assert statuses["2147483645"].state is JobState.UNKNOWN
    assert statuses["2147483645"].native_state == NOT_LISTED


async def test_submission_is_found_by_gateway_id_and_never_repeated(
    slurm: SlurmAdapter,
) -> None:
    spec = job("sleep 2")
    native_id = await slurm.submit(spec)
    unknown = job("true").gateway_id
    before = slurm.remote_commands
    assert await slurm.find_by_gateway_id([spec.gateway_id, unknown]) == {
        spec.gateway_id: native_id
    }
    assert slurm.remote_commands - before == 1
    # A retried submit of the same gateway id returns the job already there.
    assert await slurm.submit(spec) == native_id
    listed = await slurm.run(f"squeue -h -u {slurm.target.login} -o '%i %k'")
    assert listed.stdout.decode().count(spec.gateway_id) == 1  # no second sbatch
    # Without the native_id file (lost with the reply), the job's comment still tells.
    root = await slurm.root()
    await slurm.connection.sftp(lambda s: s.remove(JobDir(root, spec.gateway_id).file("native_id")))
    assert await slurm.find_by_gateway_id([spec.gateway_id]) == {spec.gateway_id: native_id}


async def test_bad_partition_is_rejected_naming_the_queue_with_sbatchs_message(
    slurm: SlurmAdapter,
) -> None:
    error = await check_bad_queue_is_rejected_naming_it(slurm)
    assert "sbatch --parsable job.sh" in error.command
    assert error.stderr == (
        "sbatch: error: invalid partition specified: nosuchqueue\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )


async def test_walltime_over_the_partitions_limit_is_rejected_naming_it(
    slurm: SlurmAdapter,
) -> None:
    with pytest.raises(SubmitRejected) as caught:
        await slurm.submit(job("true", queue="debug", walltime_seconds=2 * 3600))  # MaxTime 1 h
    assert caught.value.field == "resources.walltime"
    assert "Requested time limit is invalid" in caught.value.stderr


async def test_array_of_four_elements_all_complete_with_their_own_output(
    slurm: SlurmAdapter,
) -> None:
    await check_array_of_four(slurm)


async def test_array_elements_that_left_squeue_still_get_their_end(
    testbed: Testbed, pool: SSHPool
) -> None:
    # centerb forgets finished jobs within seconds: the elements' files tell their ends.
    centerb = SlurmAdapter(target(testbed, "centerb"), pool)
    spec = job('exit "$HPCFED_ARRAY_INDEX"', array="1-3%1")
    native_id = await centerb.submit(spec)
    status = await wait_for_status(centerb, native_id, spec.gateway_id, finished)
    assert [(e.index, e.native_id, e.state, e.exit_code) for e in status.elements] == [
        (i, f"{native_id}_{i}", JobState.FAILED, i) for i in (1, 2, 3)
    ]
    gone = await wait_for_status(
        centerb, native_id, spec.gateway_id, lambda s: s.native_state == "LEFT_QUEUE"
    )
    assert [(e.state, e.exit_code) for e in gone.elements] == [
        (JobState.FAILED, i) for i in (1, 2, 3)
    ]


async def test_dependent_job_stays_pending_until_its_parent_completed(
    slurm: SlurmAdapter,
) -> None:
    await check_dependent_job_waits_for_its_parent(slurm)


async def test_missing_output_is_reported_as_absent(slurm: SlurmAdapter) -> None:
    chunk = await slurm.read_output("1", job("true").gateway_id, "stderr", offset=7)
    assert (chunk.data, chunk.offset, chunk.size, chunk.exists) == (b"", 7, None, False)


async def test_gpu_job_gets_its_gres(testbed: Testbed, pool: SSHPool) -> None:
    centerb = SlurmAdapter(target(testbed, "centerb"), pool)
    spec = job('echo "$CUDA_VISIBLE_DEVICES"', gpus_per_node=2, gpu_type="a100")
    native_id = await centerb.submit(spec)
    status = await wait_for_status(centerb, native_id, spec.gateway_id, finished)
    assert status.state is JobState.COMPLETED
    out = await centerb.read_output(native_id, spec.gateway_id, "stdout")
    assert len(out.data.decode().strip().split(",")) == 2


async def test_a_finished_job_says_when_it_started_and_ended(slurm: SlurmAdapter) -> None:
    status = await check_sleep_is_timed(slurm)
    # squeue still lists it COMPLETED with its exit code and times: no job dir read.
    listed = parse_squeue((await slurm.run(build_squeue_command("alice"))).stdout.decode())
    assert (listed[status.native_id].started_at, listed[status.native_id].ended_at) == (
        status.started_at,
        status.ended_at,
    )
    # squeue's own format is the local time of the login's zone, which the gateway does
    # not know; the command asks for epoch seconds, the same in any zone.
    elsewhere = "export TZ=Asia/Shanghai; "
    plain = f"squeue -h -t all -u alice -O {quote(SQUEUE_FIELDS)}"
    local = (await slurm.run(elsewhere + plain)).stdout.decode()
    assert status.started_at is not None
    shanghai = datetime.fromtimestamp(status.started_at, ZoneInfo("Asia/Shanghai"))
    assert f"|{shanghai:%Y-%m-%dT%H:%M:%S}|" in local
    assert parse_squeue(local)[status.native_id].started_at is None  # not misread
    epochs = (await slurm.run(elsewhere + build_squeue_command("alice"))).stdout.decode()
    assert parse_squeue(epochs)[status.native_id].started_at == status.started_at


async def test_a_job_that_left_squeue_at_once_still_says_when_it_ran(
    testbed: Testbed, pool: SSHPool
) -> None:
    # centerb forgets finished jobs within seconds (MinJobAge=2): job.sh's `times` tell.
    await check_sleep_is_timed(SlurmAdapter(target(testbed, "centerb"), pool))


# Last: its job, submitted as the module started, outlives its walltime meanwhile.
async def test_job_past_its_walltime_ends_in_timeout(
    slurm: SlurmAdapter, walltime_job: WalltimeJob | None
) -> None:
    status = await await_walltime_kill_is_timeout(slurm, walltime_job)
    assert status.native_state in ("TIMEOUT", "LEFT_QUEUE")
