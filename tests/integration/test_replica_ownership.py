"""Replicas on one PostgreSQL database share the centers' polling and probing through
the leases `center/<id>`: exactly one replica holds each, so the centers see the
status commands of one gateway however many replicas run, and a replica killed
with SIGKILL loses its centers to a survivor within the lease's bound
(gateway/centers/ownership.py), which goes on polling its jobs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from benchmarks.harness import metric_sum, scrape
from tests.integration._replicas import replicas
from tests.integration._served import ServedGateway
from tests.testbed import Testbed

#: What the replicas are told (gateway.yaml): a short lease, and probes rare enough that
#: a window of poll ticks holds the status commands alone.
SETTINGS: dict[str, Any] = {"lease_ttl": 3.0, "health": {"probe_interval": 120.0}}
#: How long anything the test waits for may take at most (a bound, not a timing).
PATIENCE = 90.0
HOLD = {"slurm": {"slurm": ["--hold"]}, "pbs": {"pbs": ["-h"]}}
CENTER_TYPES = {"centera": "slurm", "centerb": "slurm", "centerc": "pbs"}


def holders(dsn: str, prefix: str = "center/") -> dict[str, tuple[str, int]]:
    """The unexpired leases named `prefix...`: name -> (holder, fence), as the table says."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, holder, fence FROM leases WHERE starts_with(name, %s) "
            "AND expires_at > now()",
            (prefix,),
        ).fetchall()
    return {name: (holder, fence) for name, holder, fence in rows}


def pid_of(holder: str) -> int:
    """A holder is `host:pid:random` (gateway.store.leases.replica_id)."""
    return int(holder.split(":")[1])


def wait_for(what: str, check: Any, patience: float = PATIENCE) -> Any:
    deadline = time.monotonic() + patience
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {patience:g} s"
        time.sleep(0.05)


def owner_of(dsn: str, center: str, gateways: list[ServedGateway]) -> ServedGateway | None:
    lease = holders(dsn).get(f"center/{center}")
    if lease is None:
        return None
    by_pid = {g.proc.pid: g for g in gateways if g.proc is not None}
    return by_pid.get(pid_of(lease[0]))


async def request(
    http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, url, json=body, headers=headers) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


async def test_one_replica_owns_a_center_and_a_survivor_takes_it_over(
    tmp_path: Path, testbed: Testbed, pg_dsn: str
) -> None:
    tag = f"own{uuid.uuid4().hex[:8]}"
    with replicas(tmp_path, testbed, pg_dsn, tag, count=2, **SETTINGS) as gateways:
        owner = wait_for(
            "one replica holds center/centera", lambda: owner_of(pg_dsn, "centera", gateways)
        )
        survivor = next(g for g in gateways if g is not owner)
        fence = holders(pg_dsn)["center/centera"][1]
        # It stays with that one while both run.
        await asyncio.sleep(SETTINGS["lease_ttl"] * 2)
        assert owner_of(pg_dsn, "centera", gateways) is owner
        assert holders(pg_dsn)["center/centera"][1] == fence  # renewed, never retaken
        token = survivor.token()
        spec = {"name": tag, "center": "centera", "command": "sleep", "arguments": ["6"]}
        async with aiohttp.ClientSession() as http:
            status, job = await request(http, "POST", f"{owner.url}/v1/jobs", token, spec)
            assert status == 201, job
            assert job["native_id"], job
            url = f"{survivor.url}/v1/jobs/{job['id']}"

            async def state() -> str:
                status, body = await request(http, "GET", url, token)
                assert status == 200, body
                return str(body["state"])

            deadline = time.monotonic() + PATIENCE
            while await state() != "RUNNING":  # polled by the owner, read at the survivor
                assert time.monotonic() < deadline, "the job never ran"
                await asyncio.sleep(0.1)
            killed = time.monotonic()
            owner.kill9()
            wait_for(
                "the survivor holds center/centera",
                lambda: owner_of(pg_dsn, "centera", gateways) is survivor,
            )
            took = time.monotonic() - killed
            assert holders(pg_dsn)["center/centera"][1] > fence
            # The survivor polls the job to its end (evidence from the center).
            while (now := await state()) not in ("COMPLETED", "FAILED", "CANCELLED"):
                assert time.monotonic() < deadline + PATIENCE, f"the job stayed {now}"
                await asyncio.sleep(0.1)
            ended = time.monotonic() - killed
            assert now == "COMPLETED"
            status, body = await request(http, "GET", url, token)
            assert body["exit_code"] == 0
    print(
        f"\ntakeover after kill -9: lease at the survivor after {took:.2f} s "
        f"(bound: lease_ttl {SETTINGS['lease_ttl']:g} s * 4/3 = "
        f"{SETTINGS['lease_ttl'] * 4 / 3:.2f} s), job COMPLETED there after {ended:.2f} s"
    )


def tracked_jobs() -> int:
    """How many held jobs (b) tracks over centera, centerb and centerc."""
    return int(os.environ.get("HPCFED_OWNERSHIP_JOBS", "2000"))


def cancel_at_centers(testbed: Testbed, natives: dict[str, list[str]]) -> None:
    for center, ids in natives.items():
        command = "qdel" if CENTER_TYPES[center] == "pbs" else "scancel"
        for i in range(0, len(ids), 500):
            argv = testbed.ssh_command(
                center, f"{command} {' '.join(ids[i : i + 500])}", user="alice"
            )
            subprocess.run(argv, capture_output=True, timeout=120)


async def test_three_replicas_cost_the_centers_one_gateways_status_commands(
    tmp_path: Path, testbed: Testbed, pg_dsn: str
) -> None:
    tag = f"own{uuid.uuid4().hex[:8]}"
    centers = tuple(CENTER_TYPES)
    natives: dict[str, list[str]] = {c: [] for c in centers}
    with replicas(tmp_path, testbed, pg_dsn, tag, count=3, centers=centers, **SETTINGS) as gateways:
        try:
            for center in centers:
                wait_for(
                    f"one replica holds {center}", lambda c=center: owner_of(pg_dsn, c, gateways)
                )
            token = gateways[0].token()
            n = tracked_jobs()
            async with aiohttp.ClientSession() as http:
                # A share of the jobs at each center, each batch through another replica.
                per_center = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
                sends = []
                for i, (center, count) in enumerate(zip(centers, per_center, strict=True)):
                    spec = {
                        "name": tag,
                        "center": center,
                        "command": "true",
                        "extra_directives": HOLD[CENTER_TYPES[center]],
                    }
                    url = f"{gateways[i].url}/v1/jobs/batch"
                    for start in range(0, count, 500):
                        body = {"jobs": [spec] * min(500, count - start)}
                        sends.append((center, request(http, "POST", url, token, body)))
                results = await asyncio.gather(*(s for _, s in sends))
                for (center, _), (status, body) in zip(sends, results, strict=True):
                    assert status in (200, 201, 207), body
                    for item in body["results"]:
                        assert item["status"] == 201, item
                        natives[center].append(item["job"]["native_id"])
                assert sum(len(v) for v in natives.values()) == n
                assert all(all(ids) for ids in natives.values())
                counts = await _commands_per_tick(
                    http, gateways, centers, token_for=ops_token(gateways[0])
                )
        finally:
            cancel_at_centers(testbed, natives)
    for center, (commands, ticks, pollers) in counts.items():
        print(
            f"\n{center}: {len(natives[center])} held jobs, {commands:g} remote commands over "
            f"{ticks:g} poll ticks of {pollers} replica(s) of 3: {commands / ticks:.2f} per tick"
        )
    for center, (commands, ticks, pollers) in counts.items():
        assert pollers == 1, f"{center} was polled by {pollers} replicas"
        assert commands / ticks <= 2.0, (center, commands, ticks)


def ops_token(gateway: ServedGateway) -> str:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "gateway.cli", "token", "issue"),
            *("--config", str(gateway.config)),
            *("--user", "ops", "--role", "operator"),
        ],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def _commands_per_tick(
    http: aiohttp.ClientSession,
    gateways: list[ServedGateway],
    centers: tuple[str, ...],
    *,
    token_for: str,
    ticks: int = 10,
) -> dict[str, tuple[float, float, int]]:
    """Per center, over >= `ticks` poll ticks: (SSH commands of every replica there, the
    ticks of the replica that polled it most, how many replicas polled it)."""

    async def read() -> list[dict[Any, float]]:
        out = []
        for gateway in gateways:
            async with http.get(
                f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {token_for}"}
            ) as resp:
                text = await resp.text()
                assert resp.status == 200, text[:300]
            out.append(scrape(text))
        return out

    def polls(samples: dict[Any, float], center: str) -> float:
        return metric_sum(samples, "hpcfed_poll_duration_seconds_count", center=center)

    def commands(samples: dict[Any, float], center: str) -> float:
        return metric_sum(samples, "hpcfed_ssh_commands_total", center=center)

    first = await read()
    deadline = time.monotonic() + PATIENCE * 2
    while True:
        now = await read()
        most = {
            c: max(polls(n, c) - polls(f, c) for n, f in zip(now, first, strict=True))
            for c in centers
        }
        if all(most[c] >= ticks for c in centers):
            break
        assert time.monotonic() < deadline, f"fewer than {ticks} poll ticks: {most}"
        await asyncio.sleep(0.2)
    out = {}
    for c in centers:
        spent = sum(commands(n, c) - commands(f, c) for n, f in zip(now, first, strict=True))
        pollers = sum(1 for n, f in zip(now, first, strict=True) if polls(n, c) > polls(f, c))
        out[c] = (spent, most[c], pollers)
    return out
