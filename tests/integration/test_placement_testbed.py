"""`center: auto` on the real testbed: load, GPUs, energy figures and admission decide."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.client.core import ClientError, HpcfedClient
from gateway.config import LoadedConfig
from gateway.config_models import AdmissionConfig, ComputingPowerConfig
from tests.conftest import GatewayFactory, config_with

pytestmark = pytest.mark.integration

#: A job that holds all 8 cores of centera's node for a while.
WHOLE_NODE = {
    "command": "sleep",
    "arguments": ["300"],
    "center": "centera",
    "resources": {"cpus_per_task": 8, "walltime": "10m"},
}
CPU_JOB = {"command": "true", "resources": {"cpus_per_task": 2, "walltime": "5m"}}


def remote_only(testbed_config: LoadedConfig, **fields: Any) -> LoadedConfig:
    """The three remote centers (not the gateway host's local one), fresh loads."""
    centers = {c: testbed_config.centers[c] for c in ("centera", "centerb", "centerc")}
    fields.setdefault("centers", centers)
    return config_with(
        testbed_config,
        testbed_config.data_dir,
        computing_power=ComputingPowerConfig(cache_ttl=1),
        **fields,
    )


def open_admission(testbed_config: LoadedConfig, **fields: Any) -> LoadedConfig:
    """Placement tests that are not about admission let every center take jobs."""
    return remote_only(testbed_config, admission=AdmissionConfig(required=False), **fields)


async def queued_at(client: HpcfedClient, center: str, at_least: int) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            doc = await client.computing_power(center, refresh=True)
            if doc["live"]["jobs"] and doc["live"]["jobs"]["queued"] >= at_least:
                return doc
            await asyncio.sleep(0.5)


async def test_a_cpu_job_avoids_the_loaded_center_and_says_why(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(open_admission(testbed_config))
    async with gw.client() as client:
        load = [await client.submit(WHOLE_NODE) for _ in range(4)]
        assert {j["center"] for j in load} == {"centera"}
        await queued_at(client, "centera", 3)
        job = await client.submit(CPU_JOB)
        assert job["center"] != "centera"
        placement = job["placement"]
        assert placement["chosen"] == job["center"]
        assert placement["prefer"] == ["fastest"]
        explanation = placement["explanation"]
        assert explanation.startswith(f"{job['center']} (partition ")
        assert "best for fastest start" in explanation
        assert "centera: wait" in explanation
        scores = {c["center"]: c for c in placement["candidates"]}
        assert set(scores) == {"centera", "centerb", "centerc"}
        assert scores["centera"]["estimated_wait_seconds"] > 0
        assert scores[job["center"]]["estimated_wait_seconds"] == 0
        assert scores[job["center"]]["score"] > scores["centera"]["score"]
        # The decision is kept on the job and served with it.
        assert (await client.get(job["id"]))["placement"] == placement
        done = await client.wait(job["id"], timeout=90, interval=0.3)
        assert done["state"] == "COMPLETED"


async def test_a_gpu_job_lands_on_centerb_and_too_many_gpus_are_refused(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(open_admission(testbed_config))
    async with gw.client() as client:
        job = await client.submit(
            {"command": "true", "resources": {"gpus_per_node": 1, "gpu_type": "a100"}}
        )
        assert job["center"] == "centerb"
        refused = {c["center"]: c["refused"] for c in job["placement"]["candidates"]}
        assert refused["centera"][0].startswith("resources.gpus_per_node: centera partition")
        assert refused["centerc"] == [
            "resources.gpus_per_node: centerc partition batch has no GPUs"
        ]
        with pytest.raises(ClientError) as err:
            await client.submit({"command": "true", "resources": {"gpus_per_node": 8}})
        assert err.value.status == 422
        assert err.value.code == "unsatisfiable"
        assert err.value.body["field"] == "resources.gpus_per_node"
        assert "centerb partition gpu has at most 4 per node, asked 8" in str(err.value)
        # No job was stored for the refused spec.
        assert [j["id"] for j in (await client.list())["jobs"]] == [job["id"]]


async def test_prefer_greenest_follows_the_configured_energy_figures(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    greenest = {"command": "true", "placement": {"prefer": "greenest"}}
    gw = await start_gateway(open_admission(testbed_config))
    async with gw.client() as client:
        job = await client.submit(greenest)
    assert job["center"] == "centerc"  # green share 0.9, 120 gCO2e/kWh
    assert "least CO2e" in job["placement"]["explanation"]
    await gw.stop()

    centera = testbed_config.centers["centera"]
    cleaner = centera.model_copy(
        update={
            "energy": centera.energy.model_copy(
                update={"pue": 1.05, "green_share": 1.0, "carbon_intensity": 20}
            )
        }
    )
    centers = {
        "centera": cleaner,
        "centerb": testbed_config.centers["centerb"],
        "centerc": testbed_config.centers["centerc"],
    }
    again = await start_gateway(open_admission(testbed_config, centers=centers))
    async with again.client() as client:
        job = await client.submit(greenest)
    assert job["center"] == "centera"
    carbon = {c["center"]: c["carbon_g"] for c in job["placement"]["candidates"]}
    assert carbon["centera"] == min(carbon.values())


async def test_only_admitted_centers_receive_placed_jobs(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(
        remote_only(testbed_config), {"alice": ("researcher",), "root": ("admin",)}
    )
    async with gw.client() as client, gw.client("root") as admin:
        with pytest.raises(ClientError) as err:
            await client.submit(CPU_JOB)
        assert (err.value.status, err.value.code) == (503, "no_center_available")
        assert "not admitted (not evaluated yet: run 'hpcfed evaluate centera')" in str(err.value)
        # A center named explicitly still takes the job.
        explicit = await client.submit({**CPU_JOB, "center": "centera"})
        assert explicit["center"] == "centera"

        started = await admin.evaluate("centerc")
        async with asyncio.timeout(180):
            while (result := await admin.evaluation("centerc", started["id"]))[
                "state"
            ] == "RUNNING":
                await asyncio.sleep(1)
        assert result["verdict"] == "admit", result["reasons"]
        job = await client.submit(CPU_JOB)
        assert job["center"] == "centerc"
        refused = {c["center"]: c["refused"] for c in job["placement"]["candidates"]}
        assert refused["centera"][0].startswith("center: not admitted")
        centers = {c["id"]: c["admission"]["admitted"] for c in await client.centers()}
        assert centers == {"centera": False, "centerb": False, "centerc": True}
