"""The circuit breaker end to end on the embedded local center: a real server and poller,
the center's outage fed to the monitor as failed probes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from gateway.centers.health import Check, Probe
from gateway.client.core import ClientError
from gateway.config import LoadedConfig
from gateway.config_models import HealthConfig
from gateway.http.routes.keys import CENTERS, HEALTH
from gateway.units import utcnow
from tests.conftest import Gateway, GatewayFactory, config_with

USERS = {"alice": ("researcher",), "ops": ("operator",)}


def slow_probes(local_config: LoadedConfig) -> LoadedConfig:
    # One real probe at start; the outage below is fed by hand, not overwritten.
    return config_with(
        local_config, local_config.data_dir, health=HealthConfig(probe_interval=3600)
    )


async def take_down(gw: Gateway) -> None:
    monitor, center = gw.app[HEALTH], gw.app[CENTERS].get("local")
    async with asyncio.timeout(10):
        while monitor.rounds < 1:
            await asyncio.sleep(0.05)
    failed = Check(False, None, "scheduler went away")
    for _ in range(monitor.config.down_after):
        await monitor.take(center, Probe(utcnow(), Check(True), failed, Check(True)))
    assert monitor.health["local"].state == "down" and center.down is not None


async def request(gw: Gateway, method: str, path: str, **kw: Any) -> tuple[int, Any, float]:
    headers = {"Authorization": f"Bearer {gw.tokens['alice']}"}
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.url + path, headers=headers, **kw) as resp,
    ):
        return resp.status, await resp.json(), time.monotonic() - started


async def test_a_down_center_refuses_work_at_once_and_keeps_cancels_for_later(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(slow_probes(local_config), USERS)
    async with gw.client() as alice, gw.client("ops") as ops:
        running = await alice.submit({"script": "echo started\nsleep 300\n", "center": "local"})
        async with asyncio.timeout(30):
            while (before := await alice.get(running["id"]))["state"] != "RUNNING":
                await asyncio.sleep(0.1)
        (local,) = (await ops.request("GET", "/v1/health"))["centers"]
        assert local["jobs"] == {"queued": 0, "running": 1}
        assert local["poll_lag_seconds"] is not None and local["poll_lag_seconds"] >= 0
        await take_down(gw)
        doc = await ops.request("GET", "/v1/health")
        (local,) = doc["centers"]
        assert (doc["status"], local["state"]) == ("down", "down")
        assert local["recent_errors"][0] == {
            "at": local["recent_errors"][0]["at"],
            "kind": "scheduler",
            "error": "scheduler went away",
        }

        spec = {"command": "true", "center": "local"}
        status, body, seconds = await request(gw, "POST", "/v1/jobs", json=spec)
        assert (status, body["error"]["code"], body["error"]["center"]) == (
            503,
            "center_unavailable",
            "local",
        )
        assert "is down (since " in body["error"]["message"] and seconds < 2
        for path in (f"/v1/jobs/{running['id']}/output/stdout", "/v1/centers/local/files/roots"):
            status, body, _ = await request(gw, "GET", path)
            assert (status, body["error"]["code"]) == (503, "center_unavailable"), path

        async with asyncio.timeout(5):  # the monitor woke the poller
            while (unknown := await alice.get(running["id"]))["state"] != "UNKNOWN":
                await asyncio.sleep(0.05)
        assert unknown["state"] == "UNKNOWN" and unknown["native_state"] == before["native_state"]
        assert unknown["reason"].startswith("center local is down (since ")

        cancelled = await alice.cancel(running["id"])  # kept, answered 202
        assert cancelled["cancel_requested"] and cancelled["state"] == "UNKNOWN"

        await gw.app[HEALTH].probe(gw.app[CENTERS].get("local"))  # a real, good probe
        assert gw.app[HEALTH].health["local"].state == "up"
        done = await alice.wait(running["id"], timeout=30, interval=0.2)
        assert done["state"] == "CANCELLED"


async def test_placement_refuses_a_down_center_naming_since_when(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(slow_probes(local_config), USERS)
    await take_down(gw)
    async with gw.client() as alice:
        with pytest.raises(ClientError) as refused:
            await alice.submit({"command": "true", "center": "auto", "placement": {}})
    assert refused.value.status == 503
    assert "local: center: down since " in refused.value.message
