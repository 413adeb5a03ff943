"""A job the scheduler's status answer leaves out is not ended until the center says so.

Real gateways against the real testbed; the center's `squeue`/`qstat` drop named jobs
from their output (`tests.testbed.status_filter`) while the scheduler runs them, as a
front end with a defect or a PBS Pro server without job history would. The truth is
read from the scheduler itself, here, past the wrapper.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from gateway.client.core import HpcfedClient
from gateway.config import LoadedConfig
from gateway.config_models import AdmissionConfig
from gateway.http.metrics import METRICS
from gateway.http.routes.keys import POLLER
from tests.conftest import GatewayFactory, config_with
from tests.testbed import Testbed

pytestmark = pytest.mark.integration

CENTERS = ["centera", "centerc"]  # Slurm, and Slurm behind its Torque-dialect commands
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}
UNACCOUNTED_AFTER = 4.0


def unlisted_config(testbed_config: LoadedConfig) -> LoadedConfig:
    return config_with(
        testbed_config,
        testbed_config.data_dir,
        admission=AdmissionConfig(required=False),
        poll_interval=0.3,
        unaccounted_after=UNACCOUNTED_AFTER,
    )


async def wait_for(
    client: HpcfedClient,
    job_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 60.0,
    seen: list[str] | None = None,
) -> dict[str, Any]:
    """Read the job until `done` holds; every state read goes into `seen`."""
    async with asyncio.timeout(timeout):
        while True:
            record = await client.get(job_id)
            if seen is not None:
                seen.append(record["state"])
            if done(record):
                return record
            await asyncio.sleep(0.2)


def scheduler_state(testbed: Testbed, cid: str, native_id: str) -> str:
    """The job's state as slurmctld itself tells it (not through the center's wrapper)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", native_id],
        env=testbed.scheduler_env(cid),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return fields["JobState"]


@pytest.mark.parametrize("center", CENTERS)
async def test_a_running_job_the_answer_drops_stays_unended_and_its_cancel_reaches_the_center(
    center: str,
    testbed: Testbed,
    testbed_config: LoadedConfig,
    start_gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await start_gateway(unlisted_config(testbed_config))
    poller = gw.app[POLLER]
    spec = {"command": "sleep", "arguments": ["300"], "center": center}
    spec["resources"] = {"walltime": "10m"}
    async with gw.client() as client:
        job = await client.submit(spec)
        running = await wait_for(client, job["id"], lambda r: r["state"] == "RUNNING")
        native_id = running["native_id"]
        testbed.drop_from_status(center, [native_id])
        try:
            # Ticks that do not list it: it keeps RUNNING, then is shown UNKNOWN, never ended.
            first_tick = poller.ticks
            seen: list[str] = []
            with caplog.at_level(logging.WARNING, logger="hpcfed.poller"):
                lost = await wait_for(
                    client, job["id"], lambda r: r["native_state"] == "UNACCOUNTED", seen=seen
                )
            assert poller.ticks - first_tick >= 3
            assert not TERMINAL & set(seen), seen
            assert seen[0] == "RUNNING"
            assert lost["state"] == "UNKNOWN"
            assert f"center {center} has not listed this job since" in lost["reason"]
            assert scheduler_state(testbed, center, native_id) == "RUNNING"
            warned = [r for r in caplog.records if "unaccounted for" in r.getMessage()]
            assert len(warned) == 1 and job["id"] in warned[0].getMessage()
            metric = gw.app[METRICS].jobs_unaccounted.labels(center)._value.get()
            assert metric == 1

            # The cancel is sent: the center had not confirmed any end.
            await client.cancel(job["id"])
            async with asyncio.timeout(30):
                while scheduler_state(testbed, center, native_id) != "CANCELLED":
                    await asyncio.sleep(0.2)
            # Still not listed: the cancel the center accepted is the evidence of its end.
            ended = await wait_for(client, job["id"], lambda r: r["state"] in TERMINAL)
            assert ended["state"] == "CANCELLED"
        finally:
            testbed.restore_status(center)


@pytest.mark.parametrize("center", CENTERS)
async def test_a_job_that_ends_while_the_answer_drops_it_ends_as_its_directory_says(
    center: str,
    testbed: Testbed,
    testbed_config: LoadedConfig,
    start_gateway: GatewayFactory,
) -> None:
    """What a PBS Pro server without job history does to every job that ends."""
    gw = await start_gateway(unlisted_config(testbed_config))
    spec = {"script": "sleep 3\nexit 3\n", "center": center, "resources": {"walltime": "5m"}}
    async with gw.client() as client:
        job = await client.submit(spec)
        running = await wait_for(client, job["id"], lambda r: r["state"] == "RUNNING")
        testbed.drop_from_status(center, [running["native_id"]])
        try:
            seen: list[str] = []
            ended = await wait_for(client, job["id"], lambda r: r["state"] in TERMINAL, seen=seen)
            assert (ended["state"], ended["exit_code"]) == ("FAILED", 3)
            assert "exit status from the job directory" in ended["reason"]
            assert "UNKNOWN" not in seen  # it ended well within the bound
        finally:
            testbed.restore_status(center)
