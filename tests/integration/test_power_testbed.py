"""The computing-power descriptor of real centers, served by a real gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.centers.descriptor import schema_errors
from gateway.client.core import HpcfedClient
from gateway.config import LoadedConfig
from tests.conftest import GatewayFactory

pytestmark = pytest.mark.integration


async def gpus_allocated(client: HpcfedClient, want: int, timeout: float = 60) -> dict[str, Any]:
    """The centerb descriptor once its live a100 allocation is `want`."""
    async with asyncio.timeout(timeout):
        while True:
            doc = await client.computing_power("centerb", refresh=True)
            gpus = {g["model"]: g for g in doc["live"]["gpus"]}
            if gpus.get("a100", {}).get("allocated") == want:
                return doc
            await asyncio.sleep(0.5)


async def test_every_center_serves_a_descriptor_that_validates(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        docs = {c: await client.computing_power(c) for c in ("centera", "centerb", "centerc")}
    for cid, doc in docs.items():
        assert schema_errors(doc) == [], cid
        assert doc["center"]["id"] == cid
        assert doc["live"]["status"] == "ok", doc["live"]
        assert doc["peak"]["complete"] is True  # the testbed publishes hardware figures
        assert doc["availability"]["probes"] >= 1
    a, b, c = docs["centera"], docs["centerb"], docs["centerc"]
    assert [(p["name"], p["default"]) for p in a["partitions"]] == [
        ("debug", True),
        ("long", False),
    ]
    assert a["partitions"][0]["cores_per_node"] == 8
    assert a["partitions"][0]["memory_per_node_mib"] == 16384
    assert a["peak"]["cpu_gflops"] == pytest.approx(8 * 2.6 * 16)  # two queues, one node
    (gpu,) = b["partitions"]
    assert gpu["name"] == "gpu"
    assert gpu["gpus"] == [{"model": "a100", "count": 4, "per_node": 4, "peak_tflops": 9.7}]
    assert b["peak"]["gpu_gflops"] == pytest.approx(4 * 9700)
    assert [p["name"] for p in c["partitions"]] == ["batch"]
    assert c["partitions"][0]["cores"] == 4
    assert c["center"]["type"] == "pbs"
    assert b["price"] == {"currency": "CNY", "core_hour": 0.08, "gpu_hour": 6.0}
    assert c["energy"]["carbon_intensity_g_per_kwh"] == 120


async def test_centerb_gpu_allocation_moves_while_a_gpu_job_runs(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        before = await gpus_allocated(client, 0)
        assert before["live"]["gpus"] == [{"model": "a100", "total": 4, "allocated": 0, "idle": 4}]
        job = await client.submit(
            {
                "command": "sleep",
                "arguments": ["120"],
                "center": "centerb",
                "resources": {"gpus_per_node": 2, "gpu_type": "a100"},
            }
        )
        during = await gpus_allocated(client, 2)
        assert schema_errors(during) == []
        assert during["live"]["gpus"][0]["idle"] == 2
        assert during["live"]["jobs"]["running"] >= 1
        (gpu_live,) = during["live"]["partitions"]
        assert gpu_live["gpus"][0]["allocated"] == 2
        await client.cancel(job["id"])
        after = await gpus_allocated(client, 0)
        assert schema_errors(after) == []


async def test_the_descriptor_is_cached_and_refresh_asks_again(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        first = await client.computing_power("centera")
        cached = await client.computing_power("centera")
        assert cached["live"]["queried_at"] == first["live"]["queried_at"]
        fresh = await client.computing_power("centera", refresh=True)
        assert fresh["live"]["queried_at"] > first["live"]["queried_at"]
        # The refresh is one more query of the center, counted in its availability.
        assert fresh["availability"]["probes"] > first["availability"]["probes"]


@pytest.mark.parametrize("center", ["centera", "centerb", "centerc"])
async def test_an_evaluation_publishes_hpl_beside_the_peak_of_the_cores_it_ran_on(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, center: str
) -> None:
    """The testbed's own center files (their hardware figures, their hpcc binding): the
    evaluation's HPL run is the descriptor's `measured`, against the peak of its cores."""
    gw = await start_gateway(testbed_config, {"root": ("admin",)})
    async with gw.client("root") as admin:
        before = await admin.computing_power(center)
        assert before["measured"] is None  # not evaluated yet (a fresh store)
        started = await admin.evaluate(center)
        record = await admin.wait_evaluation(center, started["id"], timeout=120, interval=0.3)
        hpl = next(c for c in record["checks"] if c["name"] == "compute.hpl")
        assert hpl["state"] == "passed", hpl
        doc = await admin.computing_power(center, refresh=True)
    assert schema_errors(doc) == []
    measured = doc["measured"]
    cpu = testbed_config.centers[center].hardware.cpu
    assert cpu is not None
    assert measured["kernel"] == "hpl" and measured["evaluation_id"] == record["id"]
    assert measured["hpl_gflops"] > 0 and measured["problem_size"] == 2000
    cores = measured["cores"]
    assert 1 <= cores <= doc["partitions"][0]["cores_per_node"]
    assert measured["peak_gflops"] == pytest.approx(cores * cpu.clock_ghz * cpu.flops_per_cycle)
    assert measured["efficiency"] == pytest.approx(
        measured["hpl_gflops"] / measured["peak_gflops"], abs=1e-4
    )
    assert 0 < measured["efficiency"] < 1.5
    assert measured["gflops_per_core"] == pytest.approx(measured["hpl_gflops"] / cores, rel=1e-3)
    print(
        f"{center}: HPL {measured['hpl_gflops']} GFLOP/s on {cores} cores, peak "
        f"{measured['peak_gflops']} GFLOP/s ({cpu.model}), efficiency {measured['efficiency']}"
    )
