"""/metrics and request-id'd JSON logs through a real gateway at the testbed's centera."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import LoadedConfig
from gateway.http.routes.keys import VAULT
from gateway.identity.vault import ssh_key_name
from gateway.logs import JsonFormatter
from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.integration

HOME = Path("/home/alice")  # the testbed's job user; all centers share this machine's homes
JOB = {
    "command": "echo",
    "arguments": ["metrics"],
    "center": "centera",
    "resources": {"walltime": "5m"},
}


class Captured(logging.Handler):
    """Every record, and its JSON line, while the test runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    root, ssh = logging.getLogger(), logging.getLogger("adapters.transport.ssh")
    levels = root.level, ssh.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    ssh.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(levels[0])
    ssh.setLevel(levels[1])


@pytest.fixture
def workdir() -> Iterator[str]:
    name = f"metrics-test-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(HOME / name, ignore_errors=True)


@pytest.fixture
async def gw(testbed_config: LoadedConfig, start_gateway: GatewayFactory) -> Gateway:
    return await start_gateway(testbed_config, {"alice": ("researcher",), "op": ("operator",)})


@pytest.fixture
async def alice(gw: Gateway) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {gw.tokens['alice']}"}
    async with aiohttp.ClientSession(gw.url, headers=headers) as session:
        yield session


async def _until_terminal(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with asyncio.timeout(90):
        while True:
            async with session.get(url) as resp:
                body: dict[str, Any] = await resp.json()
            if body.get("terminal") or body.get("state") in ("COMPLETED", "FAILED", "CANCELLED"):
                return body
            await asyncio.sleep(0.3)


async def _scrape(gw: Gateway, token: str) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.url + "/metrics", headers=headers) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def _samples(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name -> its samples (name, labels, value)."""
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v for n, got, v in samples if n == name and all(got.get(k) == w for k, w in labels.items())
    )


async def test_metrics_count_a_jobs_requests_commands_polls_and_bytes(
    gw: Gateway, alice: aiohttp.ClientSession, workdir: str, captured: Captured
) -> None:
    async with alice.post("/v1/jobs", json=JOB, headers={"X-Request-Id": "abc-123"}) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["X-Request-Id"] == "abc-123"
        job = await resp.json()
    done = await _until_terminal(alice, f"/v1/jobs/{job['id']}")
    assert done["state"] == "COMPLETED", done

    data = b"federated bytes\n" * 64
    async with alice.post(
        "/v1/centers/centera/files/mkdir", json={"path": workdir, "parents": True}
    ) as resp:
        assert resp.status in (200, 201), await resp.text()
    put = alice.put(
        "/v1/centers/centera/files/content", params={"path": f"{workdir}/a.txt"}, data=data
    )
    async with put as resp:
        assert resp.status == 201, await resp.text()
        assert len(resp.headers["X-Request-Id"]) == 32  # none sent: a fresh uuid4 hex
    params = {"path": f"{workdir}/a.txt"}
    async with alice.get("/v1/centers/centera/files/content", params=params) as resp:
        assert await resp.read() == data
    transfer = {
        "source": {"center": "centera", "path": f"{workdir}/a.txt"},
        "destination": {"center": "centerb", "path": f"{workdir}/b.txt"},
    }
    async with alice.post("/v1/transfers", json=transfer) as resp:
        assert resp.status in (200, 201, 202), await resp.text()
        created = await resp.json()
    moved = await _until_terminal(alice, f"/v1/transfers/{created['id']}")
    assert moved["state"] == "COMPLETED", moved

    status, content_type, text = await _scrape(gw, gw.issue("op", "operator"))
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    families = _samples(text)

    http = families["hpcfed_http_requests"]
    assert _value(http, "hpcfed_http_requests_total", route="jobs.submit", status="201") == 1
    duration = families["hpcfed_http_request_duration_seconds"]
    count = "hpcfed_http_request_duration_seconds_count"
    assert _value(duration, count, route="jobs.submit", method="POST") == 1
    ssh = families["hpcfed_ssh_commands"]
    assert _value(ssh, "hpcfed_ssh_commands_total", center="centera", outcome="ok") > 0
    ssh_time = families["hpcfed_ssh_command_duration_seconds"]
    assert _value(ssh_time, "hpcfed_ssh_command_duration_seconds_count", center="centera") > 0
    pool = families["hpcfed_ssh_pool_connections"]
    assert _value(pool, "hpcfed_ssh_pool_connections", center="centera") >= 1
    polls = families["hpcfed_poll_duration_seconds"]
    assert _value(polls, "hpcfed_poll_duration_seconds_count", center="centera") > 0
    jobs = families["hpcfed_jobs"]
    assert _value(jobs, "hpcfed_jobs", center="centera", state="COMPLETED") >= 1
    assert _value(jobs, "hpcfed_jobs", center="centera", state="RUNNING") == 0
    moved_bytes = families["hpcfed_transfer_bytes"]
    assert _value(moved_bytes, "hpcfed_transfer_bytes_total", direction="copied") == len(data)
    assert _value(moved_bytes, "hpcfed_transfer_bytes_total", direction="upload") == len(data)
    assert _value(moved_bytes, "hpcfed_transfer_bytes_total", direction="download") == len(data)

    # The submission's SSH commands carry its request id, in records and JSON lines.
    commands = [
        r
        for r in captured.records
        if r.name == "adapters.transport.ssh" and hasattr(r, "exit_status")
    ]
    tagged = [r for r in commands if getattr(r, "request_id", None) == "abc-123"]
    assert tagged, [r.getMessage() for r in commands]
    assert all(r.levelno == logging.DEBUG and r.center == "centera" for r in tagged)  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in captured.lines]
    submitted = [d for d in lines if d.get("request_id") == "abc-123" and "exit_status" in d]
    assert submitted and {"ts", "level", "logger", "message", "login", "duration_seconds"} <= set(
        submitted[0]
    )
    # The login's private key never reaches a log line.
    key = gw.app[VAULT].get(ssh_key_name("centera", submitted[0]["login"])).decode()
    body_lines = [ln for ln in key.splitlines() if ln and not ln.startswith("-----")]
    everything = "\n".join(captured.lines)
    assert body_lines and not any(ln in everything for ln in body_lines)


async def test_a_researcher_may_not_read_metrics(gw: Gateway) -> None:
    status, _, text = await _scrape(gw, gw.tokens["alice"])
    assert status == 403
    assert json.loads(text)["error"]["permission"] == "metrics.read"
