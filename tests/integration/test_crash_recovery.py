"""Nothing accepted is lost or run twice: a real `hpcfed serve` killed with SIGKILL in
the middle of a storm of submissions, then restarted on the same data dir; and a
graceful stop on SIGTERM while submissions are in flight.

The center's own listing (squeue, by the `hpcfed:<gateway id>` comment each job
carries) is the judge, not the gateway's store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration._served import STOP_BOUND, served
from tests.testbed import Testbed

STORM = 200
#: SIGKILL once this many of the storm's requests have answered: early and late.
KILL_POINTS = (60, 100)
GRACEFUL = 20
RECONCILE_BOUND = 40.0


@dataclass
class Answer:
    key: str
    status: int | None = None  # None: no HTTP answer (connection cut)
    job_id: str | None = None
    error: str | None = None


def center_listing(testbed: Testbed) -> collections.Counter[str]:
    """gateway id -> how many jobs at centera carry it (pending or running)."""
    argv = testbed.ssh_command("centera", "squeue -h -u alice -O 'JobID:|,Comment:'")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    found: collections.Counter[str] = collections.Counter()
    for line in result.stdout.splitlines():
        _, _, comment = line.partition("|")
        if comment.strip().startswith("hpcfed:"):
            found[comment.strip()[len("hpcfed:") :]] += 1
    return found


def spec(tag: str) -> dict[str, Any]:
    return {
        "name": tag,  # one name for the test's jobs: scancel --name finds them all
        "command": "sleep",
        "arguments": ["30"],
        "center": "centera",
        "resources": {"walltime": "00:02:00"},
    }


async def post_job(
    session: aiohttp.ClientSession, url: str, token: str, key: str, body: dict[str, Any]
) -> Answer:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    try:
        async with session.post(f"{url}/v1/jobs", json=body, headers=headers) as resp:
            payload = await resp.json(content_type=None)
            job_id = payload.get("id") if isinstance(payload, dict) else None
            return Answer(key, resp.status, job_id, None if resp.ok else str(payload))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(key, error=f"{type(exc).__name__}: {exc}")


async def list_jobs(session: aiohttp.ClientSession, url: str, token: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{url}/v1/jobs", params=params, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


async def wait_reconciled(
    session: aiohttp.ClientSession, url: str, token: str, tag: str
) -> tuple[list[dict[str, Any]], float]:
    """The storm's jobs once none is SUBMITTING any more, and how long that took."""
    started = time.monotonic()
    while True:
        jobs = [j for j in await list_jobs(session, url, token) if j["spec"]["name"] == tag]
        if not any(j["state"] == "SUBMITTING" for j in jobs):
            return jobs, time.monotonic() - started
        assert time.monotonic() - started < RECONCILE_BOUND, [
            (j["id"], j.get("reason")) for j in jobs if j["state"] == "SUBMITTING"
        ][:5]
        await asyncio.sleep(0.3)


@dataclass
class Storm:
    answers: dict[str, Answer] = field(default_factory=dict)

    def accepted(self) -> dict[str, str]:
        return {
            a.key: a.job_id
            for a in self.answers.values()
            if a.status is not None and 200 <= a.status < 300 and a.job_id
        }


async def fire(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    tag: str,
    count: int,
    answered: asyncio.Event,
    answered_after: int,
) -> tuple[Storm, list[asyncio.Task[Answer]]]:
    """Start `count` submissions at once; `answered` is set once `answered_after` returned."""
    storm = Storm()

    async def one(i: int) -> Answer:
        key = f"{tag}-{i}"
        answer = await post_job(session, url, token, key, spec(tag))
        storm.answers[key] = answer
        if len(storm.answers) >= answered_after:
            answered.set()
        return answer

    return storm, [asyncio.create_task(one(i)) for i in range(count)]


def group_processes(pgid: int) -> list[str]:
    """Processes still in a process group (its leader included), as `pid command` lines."""
    result = subprocess.run(
        ["ps", "-eo", "pid=,pgid=,args="], capture_output=True, text=True, timeout=10
    )
    rows = []
    for line in result.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] == str(pgid):
            rows.append(f"{parts[0]} {parts[2] if len(parts) > 2 else ''}")
    return rows


async def new_connections_refused(url: str, since: float, bound: float = 2.0) -> float:
    """Seconds after `since` until a new connection is refused or answered 503."""
    while True:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as fresh:
                async with fresh.get(f"{url}/healthz") as resp:
                    if resp.status == 503:
                        return time.monotonic() - since
        except (aiohttp.ClientConnectionError, TimeoutError):
            return time.monotonic() - since
        assert time.monotonic() - since < bound, "the stopping gateway still takes requests"
        await asyncio.sleep(0.02)


def report(name: str, figures: dict[str, object]) -> None:
    line = f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(line)
    out = Path(__file__).resolve().parents[2] / "test-artifacts" / "crash-recovery.txt"
    with contextlib.suppress(OSError):
        out.parent.mkdir(exist_ok=True)
        with out.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


@pytest.mark.parametrize("kill_after", KILL_POINTS)
async def test_sigkill_mid_storm_loses_nothing_and_duplicates_nothing(
    testbed: Testbed, tmp_path: Path, kill_after: int
) -> None:
    tag = f"storm{os.getpid()}k{kill_after}"
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    with served(tmp_path, testbed, tag) as gateway:
        token = gateway.token()
        url = gateway.start()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            answered = asyncio.Event()
            storm, tasks = await fire(session, url, token, tag, STORM, answered, kill_after)
            await asyncio.wait_for(answered.wait(), 60)
            gateway.kill9()
            killed_at = time.monotonic()
            await asyncio.gather(*tasks)
            first = dict(storm.answers)
            accepted = storm.accepted()
            unanswered = [k for k, a in first.items() if a.status is None]
            refused = {k: a for k, a in first.items() if a.status is not None and k not in accepted}
            assert not refused, list(refused.values())[:3]

            url = gateway.start()
            jobs, reconcile_seconds = await wait_reconciled(session, url, token, tag)
            reconciled_after_kill = time.monotonic() - killed_at
            at_center = center_listing(testbed)

            # (a) every accepted job is at the center exactly once; (b) nothing twice.
            assert not [g for g, n in at_center.items() if n > 1], "a job was submitted twice"
            missing = [j for j in accepted.values() if at_center[j] != 1]
            assert not missing, f"accepted but not at the center: {missing[:5]}"
            # (d) the crash failed nothing.
            failed = [(j["id"], j.get("reason")) for j in jobs if j["state"] == "FAILED"]
            assert not failed, failed[:5]
            stored = {j["idempotency_key"]: j["id"] for j in jobs if j.get("idempotency_key")}
            assert all(stored.get(k) == v for k, v in accepted.items())

            # (c) the unanswered ones, sent again with their keys: the stored job, or a new one.
            retried = await asyncio.gather(
                *(post_job(session, url, token, k, spec(tag)) for k in unanswered)
            )
            assert all(a.status in (200, 201, 202) for a in retried), [
                a for a in retried if a.status not in (200, 201, 202)
            ][:3]
            replayed = sum(1 for a in retried if a.status == 200)
            for a in retried:
                if a.status == 200:
                    assert stored.get(a.key) == a.job_id
            jobs, _ = await wait_reconciled(session, url, token, tag)
            at_center = center_listing(testbed)
            by_key = collections.Counter(j["idempotency_key"] for j in jobs)
            assert len(by_key) == STORM and set(by_key.values()) == {1}
            assert not [g for g, n in at_center.items() if n > 1]
            assert all(at_center[j["id"]] == 1 for j in jobs), [
                (j["id"], j["state"]) for j in jobs if at_center[j["id"]] != 1
            ][:5]
            assert not [j for j in jobs if j["state"] == "FAILED"]
            report(
                "sigkill",
                {
                    "sent": STORM,
                    "kill_after": kill_after,
                    "answered_2xx": len(accepted),
                    "unanswered": len(unanswered),
                    "stored_by_first_gateway": len(stored),
                    "resent_found_existing": replayed,
                    "resent_created": len(unanswered) - replayed,
                    "at_center": sum(at_center[j["id"]] for j in jobs),
                    "duplicates": 0,
                    "reconcile_s": f"{reconcile_seconds:.1f}",
                    "kill_to_reconciled_s": f"{reconciled_after_kill:.1f}",
                },
            )


async def test_sigterm_with_submissions_in_flight_exits_cleanly_and_keeps_every_job(
    testbed: Testbed, tmp_path: Path
) -> None:
    tag = f"term{os.getpid()}"
    timeout = aiohttp.ClientTimeout(total=60)
    with served(tmp_path, testbed, tag) as gateway:
        token = gateway.token()
        url = gateway.start()
        assert gateway.proc is not None
        pgid = gateway.proc.pid
        async with aiohttp.ClientSession(timeout=timeout) as session:
            started = asyncio.Event()
            storm, tasks = await fire(session, url, token, tag, GRACEFUL, started, 1)
            await asyncio.wait_for(started.wait(), 30)  # the first answered: others in flight
            gateway.proc.send_signal(signal.SIGTERM)
            term_at = time.monotonic()
            refused_after = await new_connections_refused(url, term_at)
            code = await asyncio.to_thread(gateway.proc.wait, STOP_BOUND)
            stop_seconds = time.monotonic() - term_at
            await asyncio.gather(*tasks)
            assert code == 0, gateway.log.read_text()[-3000:]
            leftovers = group_processes(pgid)
            assert not leftovers, leftovers
            assert not (gateway.data / "gateway-url").exists()
            accepted = storm.accepted()
            statuses = collections.Counter(a.status for a in storm.answers.values())
            refused = [a for a in storm.answers.values() if a.status not in (None, 201, 202, 503)]
            assert not refused, refused[:3]

            url = gateway.start()
            jobs, reconcile_seconds = await wait_reconciled(session, url, token, tag)
            at_center = center_listing(testbed)
            assert not [g for g, n in at_center.items() if n > 1]
            assert all(at_center[j] == 1 for j in accepted.values())
            assert not [j for j in jobs if j["state"] == "FAILED"]
            report(
                "sigterm",
                {
                    "sent": GRACEFUL,
                    "answered_2xx": len(accepted),
                    "statuses": dict(statuses),
                    "stored": len(jobs),
                    "at_center": sum(at_center[j["id"]] for j in jobs),
                    "duplicates": 0,
                    "exit_code": code,
                    "stop_s": f"{stop_seconds:.1f}",
                    "refusing_after_s": f"{refused_after:.2f}",
                    "reconcile_s": f"{reconcile_seconds:.1f}",
                },
            )
