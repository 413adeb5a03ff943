"""Health probes, the circuit breaker and /v1/health on the real testbed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gateway.client.core import HpcfedClient
from gateway.config import LoadedConfig
from gateway.config_models import AdmissionConfig, HealthConfig
from tests.conftest import Gateway, GatewayFactory, config_with
from tests.testbed import Testbed

pytestmark = pytest.mark.integration

REMOTE = ("centera", "centerb", "centerc")
USERS = {"alice": ("researcher",), "ops": ("operator",)}
INTERVAL, PROBE_TIMEOUT = 1.0, 5.0


def health_config(testbed_config: LoadedConfig) -> LoadedConfig:
    return config_with(
        testbed_config,
        testbed_config.data_dir,
        centers={c: testbed_config.centers[c] for c in REMOTE},
        admission=AdmissionConfig(required=False),
        health=HealthConfig(probe_interval=INTERVAL, probe_timeout=PROBE_TIMEOUT),
    )


async def health_until(
    ops: HpcfedClient, condition: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            doc: dict[str, Any] = await ops.request("GET", "/v1/health")
            if condition(doc):
                return doc
            await asyncio.sleep(0.1)


def states(doc: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["state"] for c in doc["centers"]}


async def job_until(
    client: HpcfedClient, job_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            job = await client.get(job_id)
            if condition(job):
                return job
            await asyncio.sleep(0.2)


async def post_job(gw: Gateway, spec: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    """Status, body and seconds taken of one POST /v1/jobs as alice."""
    headers = {"Authorization": f"Bearer {gw.tokens['alice']}"}
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gw.url}/v1/jobs", json=spec, headers=headers) as resp,
    ):
        body = await resp.json()
        return resp.status, body, time.monotonic() - started


def job(center: str, *args: str) -> dict[str, Any]:
    command, *arguments = args or ("true",)
    return {
        "command": command,
        "arguments": arguments,
        "center": center,
        "resources": {"walltime": "5m"},
    }


async def test_health_reports_every_center_up_in_the_documented_shape(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(health_config(testbed_config), USERS)
    async with gw.client("ops") as ops:
        doc = await health_until(
            ops, lambda d: set(states(d).values()) == {"up"}, 2 * INTERVAL + PROBE_TIMEOUT + 5
        )
    assert doc["status"] == "up" and doc["store"] == {"ok": True}
    assert doc["probe_interval"] == INTERVAL
    center = next(c for c in doc["centers"] if c["id"] == "centera")
    assert {
        "id",
        "name",
        "type",
        "region",
        "state",
        "since",
        "last_probe",
        "ssh_latency_ms",
        "poll_lag_seconds",
        "jobs",
        "error_rate",
        "recent_errors",
    } <= set(center)
    checks = center["last_probe"]["checks"]
    assert checks["ssh"]["ok"] and checks["ssh"]["latency_ms"] > 0
    assert checks["scheduler"] == {"ok": True, "error": None}
    assert checks["storage"] == {"ok": True, "error": None}
    assert center["ssh_latency_ms"]["p50"] > 0
    assert center["jobs"] == {"queued": 0, "running": 0}
    assert center["poll_lag_seconds"] is None  # no jobs there
    # Failed probes / probes: the shared testbed may have had an outage in the window.
    assert 0.0 <= center["error_rate"] <= 1.0


async def test_readyz_answers_without_a_token(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    gw = await start_gateway(health_config(testbed_config), USERS)
    async with aiohttp.ClientSession() as session, session.get(f"{gw.url}/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "status": "ready",
            "store": "ok",
            "config": "loaded",
            "centers": 3,
        }


async def test_a_stopped_scheduler_downs_its_center_fast_and_its_job_recovers(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(health_config(testbed_config), USERS)
    async with gw.client("ops") as ops, gw.client() as alice:
        await health_until(
            ops, lambda d: set(states(d).values()) == {"up"}, 2 * INTERVAL + PROBE_TIMEOUT + 5
        )
        slow = await alice.submit(job("centerb", "sleep", "20"))
        first_a = await alice.submit(job("centera"))
        await job_until(alice, slow["id"], lambda j: j["state"] == "RUNNING", 60)
        stopped = time.monotonic()
        await asyncio.to_thread(testbed.stop_daemon, "centerb", "slurmctld")
        try:
            doc = await health_until(
                ops,
                lambda d: states(d)["centerb"] == "down",
                2 * INTERVAL + PROBE_TIMEOUT + 2,
            )
            took = time.monotonic() - stopped
            print(f"slurmctld stop -> centerb down: {took:.2f}s")
            assert doc["status"] == "degraded"
            centerb = next(c for c in doc["centers"] if c["id"] == "centerb")
            assert centerb["since"] is not None
            assert not centerb["last_probe"]["checks"]["scheduler"]["ok"]
            assert centerb["recent_errors"][0]["kind"] == "scheduler"
            assert states(doc)["centera"] == "up"

            status, body, seconds = await post_job(gw, job("centerb"))
            assert (status, body["error"]["code"]) == (503, "center_unavailable")
            assert body["error"]["center"] == "centerb" and seconds < 2

            status, during, _ = await post_job(gw, job("centera"))
            assert status == 201, during
            unknown = await job_until(alice, slow["id"], lambda j: j["state"] == "UNKNOWN", 10)
            assert unknown["native_state"] == "RUNNING"
            assert unknown["reason"].startswith("center centerb is down (since ")
            for a in (first_a["id"], during["id"]):
                done = await alice.wait(a, timeout=60, interval=0.3)
                assert done["state"] == "COMPLETED"
        finally:
            await asyncio.to_thread(testbed.start_daemon, "centerb", "slurmctld")
        await health_until(ops, lambda d: states(d)["centerb"] == "up", 2 * INTERVAL + 10)
        done = await alice.wait(slow["id"], timeout=60, interval=0.3)
        assert done["state"] == "COMPLETED" and done["exit_code"] == 0
