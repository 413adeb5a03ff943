"""Jobs through the real HTTP API at the testbed's real Slurm and PBS-dialect centers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import subprocess

import pytest

from gateway.client.core import ClientError, HpcfedClient
from gateway.config import LoadedConfig
from gateway.config_models import HealthConfig
from gateway.http.routes.keys import CENTERS, POLLER
from tests.conftest import GatewayFactory, config_with
from tests.testbed import Testbed

pytestmark = pytest.mark.integration


def scheduler(tb: Testbed, center: str, *argv: str) -> str:
    """Run a scheduler command on the center's cluster, as its operator would."""
    result = subprocess.run(
        argv, env=tb.scheduler_env(center), capture_output=True, text=True, timeout=30
    )
    return result.stdout + result.stderr


async def wait_for_state(
    client: HpcfedClient, job_id: str, states: set[str], timeout: float = 60
) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            job = await client.get(job_id)
            if job["state"] in states:
                return job
            await asyncio.sleep(0.2)


async def test_job_at_slurm_center_prints_host_and_slurm_job_id(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        job = await client.submit(
            {"name": "where", "script": 'hostname\necho "job=$SLURM_JOB_ID"\n', "center": "centera"}
        )
        assert job["state"] == "QUEUED" and job["native_id"]
        done = await client.wait(job["id"], timeout=90)
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
        out = (await client.output(job["id"])).decode()
        assert out == f"{socket.gethostname()}\njob={job['native_id']}\n"


async def test_non_zero_exit_at_slurm_center_is_failed_with_its_code(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        job = await client.submit({"script": "echo bad >&2\nexit 3\n", "center": "centera"})
        done = await client.wait(job["id"], timeout=90)
        assert (done["state"], done["exit_code"]) == ("FAILED", 3)
        assert await client.output(job["id"], "stderr") == b"bad\n"


async def test_cancel_of_queued_job_reaches_cancelled_at_the_center(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(testbed_config)
    cpus = int(scheduler(testbed, "centera", "sinfo", "-h", "-p", "debug", "-o", "%c").split()[0])
    fill = {
        "command": "sleep",
        "arguments": ["300"],
        "center": "centera",
        "resources": {"cpus_per_task": cpus},
    }
    async with gw.client() as client:
        blocker = await client.submit({**fill, "name": "blocker"})
        await wait_for_state(client, blocker["id"], {"RUNNING"})
        waiting = await client.submit({**fill, "name": "waiting"})
        async with asyncio.timeout(60):  # until the center itself reports it waiting
            while (queued := await client.get(waiting["id"]))["native_state"] != "PENDING":
                await asyncio.sleep(0.2)
        assert queued["state"] == "QUEUED"
        await client.cancel(waiting["id"])
        done = await client.wait(waiting["id"], timeout=60)
        assert done["state"] == "CANCELLED"
        shown = scheduler(testbed, "centera", "scontrol", "show", "job", waiting["native_id"])
        assert "JobState=CANCELLED" in shown
        await client.cancel(blocker["id"])
        assert (await client.wait(blocker["id"], timeout=60))["state"] == "CANCELLED"


async def test_final_state_and_exit_code_are_learned_after_the_job_left_squeue(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    # centerb forgets finished jobs quickly (MinJobAge): the gateway must learn
    # how the job ended from the job's directory, not from squeue or sacct. Nothing
    # polls but the test: no timer, and no health probe whose change would wake it.
    config = config_with(
        testbed_config,
        testbed_config.data_dir,
        poll_interval=3600,
        health=HealthConfig(probe_interval=3600),
    )
    gw = await start_gateway(config)
    poller = gw.app[POLLER]
    async with gw.client() as client:
        job = await client.submit({"script": "exit 4\n", "center": "centerb"})
        native = job["native_id"]
        async with asyncio.timeout(150):
            while "Invalid job id" not in scheduler(testbed, "centerb", "squeue", "-j", native):
                await asyncio.sleep(1)
        assert (await client.get(job["id"]))["state"] in ("QUEUED", "RUNNING")
        await poller.tick()
        done = await client.get(job["id"])
        assert (done["state"], done["exit_code"]) == ("FAILED", 4)


async def test_one_poll_tick_for_fifty_jobs_costs_at_most_two_remote_commands(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    config = config_with(testbed_config, testbed_config.data_dir, poll_interval=3600)
    gw = await start_gateway(config)
    poller, adapter = gw.app[POLLER], gw.app[CENTERS].get("centera").adapter_for("alice")
    async with gw.client() as client:
        quick = [await client.submit({"command": "true", "center": "centera"}) for _ in range(25)]
        slow = [
            await client.submit({"command": "sleep", "arguments": ["300"], "center": "centera"})
            for _ in range(25)
        ]
        quick_ids = ",".join(j["native_id"] for j in quick)
        # Let the quick ones finish at the center, so the tick must also learn final states.
        async with asyncio.timeout(120):
            while True:
                out = scheduler(
                    testbed, "centera", "squeue", "-h", "-t", "all", "-j", quick_ids, "-o", "%T"
                )
                if out.split() == ["COMPLETED"] * 25:
                    break
                await asyncio.sleep(0.5)
        before = adapter.remote_commands
        await poller.tick()
        assert adapter.remote_commands - before <= 2
        states = {j["id"]: j["state"] for j in (await client.list(limit=100))["jobs"]}
        assert all(states[j["id"]] == "COMPLETED" for j in quick)
        assert all(states[j["id"]] in ("QUEUED", "RUNNING") for j in slow)
        for job in slow:
            await client.cancel(job["id"])


async def test_unknown_host_key_is_refused_naming_center_and_fingerprint(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    centers = dict(testbed_config.centers)
    real = centers["centera"]
    assert real.ssh is not None
    impostor_key = centers["centerb"].ssh.host_keys  # a valid key, but not centera's
    centers["centera"] = real.model_copy(
        update={"ssh": real.ssh.model_copy(update={"host_keys": impostor_key})}
    )
    gw = await start_gateway(config_with(testbed_config, testbed_config.data_dir, centers=centers))
    seen = base64.b64decode(real.ssh.host_keys[0].split()[1])
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(seen).digest()).decode().rstrip("=")
    async with gw.client() as client:
        with pytest.raises(ClientError) as err:
            await client.submit({"command": "true", "center": "centera"})
    assert err.value.status == 502
    assert err.value.code == "center_host_key_rejected"
    assert "centera" in err.value.message and fingerprint in err.value.message


async def test_job_at_pbs_center_completes_and_its_output_reads_back(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        ok = await client.submit(
            {
                "script": 'echo "pbs says $GREETING"\n',
                "environment": {"GREETING": "hi there"},
                "center": "centerc",
            }
        )
        bad = await client.submit({"script": "exit 5\n", "center": "centerc"})
        done = await client.wait(ok["id"], timeout=90)
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
        assert await client.output(ok["id"]) == b"pbs says hi there\n"
        failed = await client.wait(bad["id"], timeout=90)
        assert (failed["state"], failed["exit_code"]) == ("FAILED", 5)


async def test_gpu_job_at_gpu_center_sees_the_gpus_it_asked_for(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        job = await client.submit(
            {
                "script": 'echo "$CUDA_VISIBLE_DEVICES"\n',
                "center": "centerb",
                "resources": {"gpus_per_node": 2, "gpu_type": "a100"},
            }
        )
        done = await client.wait(job["id"], timeout=90)
        assert done["state"] == "COMPLETED"
        assert len((await client.output(job["id"])).decode().strip().split(",")) == 2


async def test_a_batch_goes_in_one_command_per_center_and_each_job_has_its_outcome(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    config = config_with(testbed_config, testbed_config.data_dir, poll_interval=3600)
    gw = await start_gateway(config)
    centers = gw.app[CENTERS]
    sent: dict[str, list[str]] = {"centera": [], "centerc": []}
    for center, commands in sent.items():
        adapter = centers.get(center).adapter_for("alice")
        run = adapter.run

        async def recording(command: str, stdin: bytes | None = None, *, _run=run, _log=commands):
            _log.append(command)
            return await _run(command, stdin)

        adapter.run = recording  # type: ignore[method-assign]
    specs = [{"center": "centera", "command": "echo", "arguments": [f"a{i}"]} for i in range(20)]
    specs += [{"center": "centerc", "command": "echo", "arguments": [f"c{i}"]} for i in range(5)]
    specs.append({"center": "centera", "command": "true", "queue": "nosuchqueue"})

    def submissions() -> dict[str, int]:
        # A submission command reads its jobs' files as a tar on stdin.
        return {c: sum(1 for cmd in cmds if "tar -xf -" in cmd) for c, cmds in sent.items()}

    async with gw.client() as client:
        results = await client.submit_batch(specs, idempotency_key="batch-1")
        # 26 jobs at two centers: one submission command each (up to 25 jobs per command).
        assert submissions() == {"centera": 1, "centerc": 1}
        assert [r["index"] for r in results] == list(range(26))
        assert [r["status"] for r in results] == [201] * 25 + [422]
        refused = results[25]
        assert refused["error"]["code"] == "rejected_by_center"
        assert refused["error"]["field"] == "queue"
        assert "nosuchqueue" in refused["error"]["message"]
        assert refused["job"]["state"] == "FAILED"
        natives = [r["job"]["native_id"] for r in results[:25]]
        assert all(natives) and len(set(natives)) == 25
        # The same batch again, same key: the same jobs, nothing sent again.
        again = await client.submit_batch(specs, idempotency_key="batch-1")
        assert [r["status"] for r in again] == [200] * 26
        assert [r["job"]["id"] for r in again] == [r["job"]["id"] for r in results]
        assert submissions() == {"centera": 1, "centerc": 1}
        # Every job is the one asked for: its output is its own.
        ids = [r["job"]["id"] for r in results[:25]]
        async with asyncio.timeout(120):
            while True:
                await gw.app[POLLER].tick()
                listed = {j["id"]: j for j in (await client.list(limit=100))["jobs"]}
                jobs = [listed[i] for i in ids]
                if all(j["terminal"] for j in jobs):
                    break
                await asyncio.sleep(0.5)
        for job, spec in zip(jobs, specs, strict=False):
            assert (job["state"], job["exit_code"]) == ("COMPLETED", 0)
            assert await client.output(job["id"]) == f"{spec['arguments'][0]}\n".encode()


async def test_an_invalid_spec_refuses_the_whole_batch_naming_it(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        before = (await client.list(limit=1000))["jobs"]
        with pytest.raises(ClientError) as caught:
            await client.submit_batch(
                [{"center": "centera", "command": "true"}, {"center": "centera", "nodes": 2}]
            )
        assert caught.value.status == 422
        assert caught.value.body["field"] == "jobs[1].nodes"
        with pytest.raises(ClientError) as caught:
            await client.submit_batch([])
        assert (caught.value.status, caught.value.body["field"]) == (422, "jobs")
        assert (await client.list(limit=1000))["jobs"] == before  # nothing stored
