"""Replicas behind a real HAProxy on one real PostgreSQL database: what an operator
runs. The CLI works through the load balancer; a job lands once and reads agree on
every replica; and the replica that polls centera, killed with SIGKILL in the middle
of a storm of submissions whose clients retry with their Idempotency-Key, loses
nothing and doubles nothing, and its polling moves to the survivor.

The center's own listing (squeue, by the `hpcfed:<gateway id>` comment each job
carries) is the judge, not the gateway's store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from gateway.client.core import HpcfedClient
from tests.integration._replicas import free_port, replicas
from tests.integration._served import ServedGateway
from tests.integration.test_crash_recovery import (
    Answer,
    list_jobs,
    report,
)
from tests.testbed import Testbed
from tests.testbed.haproxy import HAProxy

STORM = 200
#: SIGKILL the owner of centera's polling once this many submissions have answered.
KILL_AFTER = 80
#: A client gives up a key after this many tries (each after an error, 0.2 s apart).
TRIES = 30
#: A liveness bound for the takeover, far above the lease's ttl; the figure is printed.
TAKEOVER_BOUND = 60.0
SETTLE_BOUND = 120.0
HPCFED = (sys.executable, "-m", "gateway.cli")


def short_spec(tag: str) -> dict[str, Any]:
    """A job that ends soon: its end must be seen, whoever polls."""
    return {
        "name": tag,
        "command": "sleep",
        "arguments": ["1"],
        "center": "centera",
        "resources": {"walltime": "00:02:00"},
    }


async def post_through_proxy(
    session: aiohttp.ClientSession, url: str, token: str, key: str, body: dict[str, Any]
) -> Answer:
    """POST /v1/jobs; the load balancer's own answers (a 502 page when a replica died
    under a request) are errors like any other 5xx."""
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    try:
        async with session.post(f"{url}/v1/jobs", json=body, headers=headers) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
            job_id = payload.get("id") if isinstance(payload, dict) else None
            return Answer(key, resp.status, job_id, None if resp.ok else text[:200])
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(key, error=f"{type(exc).__name__}: {exc}")


def lease_holder(dsn: str, name: str) -> tuple[str, int] | None:
    with psycopg.connect(dsn, autocommit=True) as db:
        row = db.execute(
            "SELECT holder, fence FROM leases WHERE name = %s AND expires_at > now()", (name,)
        ).fetchone()
    return (row[0], row[1]) if row else None


def replica_of(holder: str, gateways: list[ServedGateway]) -> ServedGateway:
    """The replica whose process holds a lease (holders are host:pid:random)."""
    pid = int(holder.split(":")[1])
    found = [g for g in gateways if g.proc is not None and g.proc.pid == pid]
    assert found, f"no replica has pid {pid}"
    return found[0]


async def wait_for(what: str, bound: float, check: Any) -> Any:
    deadline = time.monotonic() + bound
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {bound:.0f}s"
        await asyncio.sleep(0.1)


@dataclass
class Balanced:
    gateways: list[ServedGateway]
    url: str  # HAProxy's
    dsn: str
    proxy: HAProxy


@pytest.fixture
def balanced(testbed: Testbed, tmp_path: Path, pg_dsn: str) -> Iterator[Balanced]:
    """Two replicas on a fresh database behind HAProxy."""
    tag = f"lb{os.getpid()}{tmp_path.name[-6:]}"
    with replicas(tmp_path, testbed, pg_dsn, tag, count=2) as gateways:
        proxy = HAProxy(
            tmp_path / "haproxy",
            "hpcfed",
            free_port(),
            {f"replica{i}": g.port for i, g in enumerate(gateways)},
        )
        proxy.start()
        try:
            for i in range(len(gateways)):
                proxy.wait_state(f"replica{i}", "UP", 20)
            yield Balanced(gateways, f"http://127.0.0.1:{proxy.port}", pg_dsn, proxy)
        finally:
            proxy.stop()


def cli(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HPCFED_URL": url, "HPCFED_TOKEN": token}
    return subprocess.run(
        [*HPCFED, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


async def test_the_cli_works_through_haproxy_and_every_replica_agrees(
    testbed: Testbed, balanced: Balanced, tmp_path: Path
) -> None:
    gateways, url = balanced.gateways, balanced.url
    token = gateways[0].token()
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(short_spec(gateways[0].tag)))

    submitted = cli(url, token, "--json", "submit", str(spec_file))
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    shown = cli(url, token, "--json", "status", job["id"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == job["id"]

    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token}"}

        async def read(base: str) -> dict[str, Any]:
            async with session.get(f"{base}/v1/jobs/{job['id']}", headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                return dict(await resp.json())

        async def ended() -> bool:
            return (await read(url))["state"] in ("COMPLETED", "FAILED", "CANCELLED")

        await wait_for("the job's end", SETTLE_BOUND, ended)
        seen = [await read(g.url) for g in gateways]
        assert seen[0] == seen[1], "the replicas disagree on the job"
        assert seen[0]["state"] == "COMPLETED", seen[0]
        mine = [
            j for j in await list_jobs(session, url, token) if j["spec"]["name"] == gateways[0].tag
        ]
        assert [j["id"] for j in mine] == [job["id"]], "the job landed more than once"


async def test_sigkill_of_the_polling_replica_mid_storm_loses_and_doubles_nothing(
    testbed: Testbed, balanced: Balanced
) -> None:
    gateways, url, dsn = balanced.gateways, balanced.url, balanced.dsn
    tag = gateways[0].tag
    token = gateways[0].token()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        owner_lease = await wait_for(
            "a replica owning centera",
            30,
            lambda: asyncio.to_thread(lease_holder, dsn, "center/centera"),
        )
        owner = replica_of(owner_lease[0], gateways)
        survivor = next(g for g in gateways if g is not owner)

        answers: dict[str, Answer] = {}
        tries: collections.Counter[str] = collections.Counter()
        answered = asyncio.Event()

        async def submit(i: int) -> Answer:
            """One client: the same key until a 2xx (or a refusal that is no error)."""
            key = f"{tag}-{i}"
            while True:
                tries[key] += 1
                answer = await post_through_proxy(session, url, token, key, short_spec(tag))
                if answer.status is not None and answer.status < 500:
                    break
                if tries[key] >= TRIES:
                    break
                await asyncio.sleep(0.2)
            answers[key] = answer
            if len(answers) >= KILL_AFTER:
                answered.set()
            return answer

        tasks = [asyncio.create_task(submit(i)) for i in range(STORM)]
        await asyncio.wait_for(answered.wait(), 120)
        owner.kill9()
        killed_at = time.monotonic()

        async def taken_over() -> tuple[str, int] | None:
            held = await asyncio.to_thread(lease_holder, dsn, "center/centera")
            if held and held[0] != owner_lease[0]:
                return held
            return None

        new_lease = await wait_for("the survivor taking centera", TAKEOVER_BOUND, taken_over)
        takeover_s = time.monotonic() - killed_at
        assert replica_of(new_lease[0], gateways) is survivor
        assert new_lease[1] > owner_lease[1], "the lease changed hands without a new fence"
        await asyncio.gather(*tasks)

        refused = {k: a for k, a in answers.items() if a.status is None or a.status >= 300}
        assert not refused, list(refused.values())[:3]
        accepted = {k: a.job_id for k, a in answers.items()}
        retried = [k for k, n in tries.items() if n > 1]

        async def settled() -> list[dict[str, Any]] | None:
            jobs = [
                j for j in await list_jobs(session, survivor.url, token) if j["spec"]["name"] == tag
            ]
            return jobs if all(j["state"] == "COMPLETED" for j in jobs) else None

        settled_from = time.monotonic()
        jobs = await wait_for("every job's end seen by the survivor", SETTLE_BOUND, settled)
        settle_s = time.monotonic() - settled_from

        by_key = collections.Counter(j["idempotency_key"] for j in jobs)
        assert len(by_key) == STORM and set(by_key.values()) == {1}, "a key holds two jobs"
        stored = {j["idempotency_key"]: j["id"] for j in jobs}
        assert all(stored[k] == v for k, v in accepted.items()), "a 2xx named another job"

    # The center's word: each job was there once.
    ran = runs_at_center(testbed)
    assert all(ran[j] == 1 for j in stored.values()), [j for j in stored.values() if ran[j] != 1][
        :5
    ]
    report(
        "replicas-sigkill",
        {
            "sent": STORM,
            "kill_after": KILL_AFTER,
            "retried_keys": len(retried),
            "tries": sum(tries.values()),
            "jobs": len(jobs),
            "ran_at_center": sum(ran[j] for j in stored.values()),
            "duplicates": 0,
            "takeover_s": f"{takeover_s:.1f}",
            "settle_s": f"{settle_s:.1f}",
        },
    )


def runs_at_center(testbed: Testbed) -> collections.Counter[str]:
    """gateway id -> how many jobs at centera carried it, ended ones included (centera
    keeps finished jobs in squeue for 5 minutes)."""
    argv = testbed.ssh_command("centera", "squeue -h -t all -u alice -O 'JobID:|,Comment:'")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    found: collections.Counter[str] = collections.Counter()
    for line in result.stdout.splitlines():
        comment = line.partition("|")[2].strip()
        if comment.startswith("hpcfed:"):
            found[comment[len("hpcfed:") :]] += 1
    return found


async def test_an_event_stream_moved_to_another_replica_misses_nothing(
    balanced: Balanced,
) -> None:
    """The Python client follows every job through the load balancer; its replica is
    killed, a job runs to its end elsewhere while no replica serves through the load
    balancer, and the reopened stream (on the survivor, with the id of the last event
    seen) still brings that job's end."""
    first, second = balanced.gateways
    tag, token, proxy = first.tag, first.token(), balanced.proxy
    proxy.command("disable server hpcfed/replica1")  # the stream opens at replica0
    seen: list[dict[str, Any]] = []

    async def ended(job_id: str) -> bool:
        return any(j["id"] == job_id and j["terminal"] for j in seen)

    async with HpcfedClient(balanced.url, token) as client:

        async def follow() -> None:
            async for job in client.events():
                seen.append(job)

        following = asyncio.create_task(follow())
        try:
            before = await client.submit(short_spec(tag))
            await wait_for(
                "the first job's end on the stream", SETTLE_BOUND, lambda: ended(before["id"])
            )
            proxy.command("disable server hpcfed/replica0")  # none serves through it now
            first.kill9()
            async with HpcfedClient(second.url, token) as direct:
                during = await direct.submit(short_spec(tag))
                assert (await direct.wait(during["id"], timeout=SETTLE_BOUND))[
                    "state"
                ] == "COMPLETED"
            assert not await ended(during["id"])  # the stream was down the whole time
            proxy.command("enable server hpcfed/replica1")
            await wait_for("the missed job's end on the stream", 60, lambda: ended(during["id"]))
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
