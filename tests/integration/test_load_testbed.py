"""`Adapter.load()` against the testbed's real schedulers (and the local center's real
processes): partitions, cores, GPUs in use and queue, from one remote command."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.base import CenterLoad, JobState, PartitionLoad
from adapters.local.adapter import LocalAdapter
from adapters.pbs.adapter import PbsAdapter
from adapters.slurm.adapter import SlurmAdapter
from adapters.transport.ssh import SSHPool
from tests.integration._adapter_helpers import (  # noqa: F401 - pool_fixture provides `pool`
    JOB_DEADLINE,
    job,
    pool_fixture,
    target,
    wait_for_status,
)
from tests.testbed import Testbed

pytestmark = pytest.mark.integration


async def load_costing_one_command(adapter: SlurmAdapter | PbsAdapter) -> CenterLoad:
    before = adapter.remote_commands
    load = await adapter.load()
    assert adapter.remote_commands - before == 1
    return load


async def wait_for_load(
    adapter: SlurmAdapter | PbsAdapter | LocalAdapter,
    done: Callable[[CenterLoad], bool],
    timeout: float = JOB_DEADLINE,
) -> CenterLoad:
    """Ask for the load until `done` holds, or fail at the deadline."""
    last: CenterLoad | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await adapter.load()
                if done(last):
                    return last
                await asyncio.sleep(0.3)
    except TimeoutError:
        pytest.fail(f"the load did not reach the awaited figures in {timeout}s; last {last}")


def by_name(load: CenterLoad) -> dict[str, PartitionLoad]:
    return {p.name: p for p in load.partitions}


async def test_centera_shows_its_two_partitions_over_one_node(
    testbed: Testbed, pool: SSHPool
) -> None:
    info = testbed.center("centera")
    load = await load_costing_one_command(SlurmAdapter(target(testbed, "centera"), pool))
    parts = by_name(load)
    assert list(parts) == ["debug", "long"]
    assert (parts["debug"].default, parts["long"].default) == (True, False)
    for p in parts.values():
        assert p.available
        assert (p.nodes_total, p.nodes_down) == (1, 0)
        assert (p.cores_total, p.cores_per_node) == (info.cpus, 8)
        assert p.memory_per_node_mib == info.memory_mib == 16384
        assert p.cores_idle + p.cores_allocated + p.cores_down == p.cores_total
        assert p.gpus == ()
    assert (parts["debug"].max_walltime_seconds, parts["long"].max_walltime_seconds) == (
        3600,
        7 * 86400,
    )
    assert load.totals is not None and load.totals.nodes_total == 1  # the node once
    assert load.jobs_queued >= 0 and load.jobs_running >= 0


async def test_centerb_counts_the_gpus_a_running_job_holds(testbed: Testbed, pool: SSHPool) -> None:
    adapter = SlurmAdapter(target(testbed, "centerb"), pool)
    (gpu,) = (await load_costing_one_command(adapter)).partitions
    assert (gpu.name, gpu.default) == ("gpu", True)
    ((model, total, per_node),) = [(g.model, g.total, g.per_node) for g in gpu.gpus]
    assert (model, total, per_node) == ("a100", 4, 4)
    assert (gpu.cores_per_node, gpu.memory_per_node_mib) == (8, 32768)

    spec = job("sleep 240", gpus_per_node=2, gpu_type="a100", walltime_seconds=300)
    native_id = await adapter.submit(spec)
    try:
        await wait_for_status(
            adapter, native_id, spec.gateway_id, lambda s: s.state is JobState.RUNNING
        )
        busy = await wait_for_load(adapter, lambda load: load.partitions[0].gpus[0].allocated == 2)
        assert busy.partitions[0].jobs_running >= 1
        assert busy.partitions[0].cores_allocated >= 1
    finally:
        await adapter.cancel(native_id, spec.gateway_id)


async def test_centerc_reports_its_pbs_queue(testbed: Testbed, pool: SSHPool) -> None:
    info = testbed.center("centerc")
    adapter = PbsAdapter(target(testbed, "centerc"), pool, dialect="torque")
    load = await load_costing_one_command(adapter)
    (batch,) = load.partitions
    assert (batch.name, batch.default, batch.available) == ("batch", True, True)
    assert (batch.nodes_total, batch.cores_total, batch.cores_per_node) == (1, 4, info.cpus)
    assert batch.memory_per_node_mib == info.memory_mib
    assert batch.max_walltime_seconds == 2 * 86400
    assert batch.cores_idle + batch.cores_allocated + batch.cores_down == 4
    assert batch.estimated_wait_seconds is None  # the Torque front end gives no estimate


async def test_local_center_counts_running_and_waiting_jobs(tmp_path: Path) -> None:
    adapter = LocalAdapter("local", tmp_path, max_running=1)
    first, second = job("sleep 60"), job("sleep 60")
    native_ids = [await adapter.submit(first), await adapter.submit(second)]
    try:
        (local,) = (await adapter.load()).partitions
        assert (local.name, local.default, local.nodes_total) == ("local", True, 1)
        assert local.cores_total == local.cores_per_node == (os.cpu_count() or 1)
        assert local.memory_per_node_mib > 0
        assert (local.max_walltime_seconds, local.gpus) == (None, ())
        assert (local.jobs_running, local.jobs_queued) == (1, 1)
        assert local.estimated_wait_seconds is None  # its one slot is taken
        assert adapter.remote_commands == 0
    finally:
        for native_id, spec in reversed(list(zip(native_ids, (first, second), strict=True))):
            await adapter.cancel(native_id, spec.gateway_id)
    idle = await wait_for_load(adapter, lambda load: load.jobs_running == 0)
    assert (idle.jobs_queued, idle.partitions[0].estimated_wait_seconds) == (0, 0.0)
