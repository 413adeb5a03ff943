"""Faults at a center: the SSH connection cut, the scheduler stopped, a hung center.

Real gateways against the real testbed; the faults are real (SIGKILL of a
center's sshd and its sessions, slurmctld stopped, a TCP listener that never
answers). Figures are printed for docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from gateway.config import LoadedConfig
from gateway.config_models import AdmissionConfig, HealthConfig, LimitsConfig
from tests.conftest import Gateway, GatewayFactory, config_with
from tests.testbed import Testbed
from tests.testbed.procs import descendants

pytestmark = pytest.mark.integration

SUBMIT_TIMEOUT = 10.0
MARGIN = 5.0  # HTTP, store and scheduling slack on a 2-core machine
BAD_ENDINGS = {"FAILED", "CANCELLED", "TIMEOUT"}
TERMINAL = {"COMPLETED", *BAD_ENDINGS}
Outcome = tuple[str, int, dict[str, Any], float]  # what, status, body, seconds


def fault_config(testbed_config: LoadedConfig, *centers: str) -> LoadedConfig:
    return config_with(
        testbed_config,
        testbed_config.data_dir,
        centers={c: testbed_config.centers[c] for c in centers},
        admission=AdmissionConfig(required=False),
        health=HealthConfig(probe_interval=1.0, probe_timeout=5.0),
        submit_timeout=SUBMIT_TIMEOUT,
        poll_interval=0.3,
        limits=LimitsConfig(rate=200.0, burst=500),  # the fault, not the rate limit, is tested
    )


def job(center: str, *args: str) -> dict[str, Any]:
    command, *arguments = args or ("true",)
    return {
        "command": command,
        "arguments": arguments,
        "center": center,
        "resources": {"walltime": "5m"},
    }


async def call(
    session: aiohttp.ClientSession, gw: Gateway, method: str, path: str, **kw: Any
) -> Outcome:
    """One request, bounded well past the gateway's own timeouts: status -1 if it hung."""
    headers = {"Authorization": f"Bearer {gw.tokens.get('alice') or ''}"}
    headers.update(kw.pop("headers", {}))
    started = time.monotonic()
    limit = aiohttp.ClientTimeout(total=SUBMIT_TIMEOUT + MARGIN + 10)
    try:
        async with session.request(
            method, gw.url + path, headers=headers, timeout=limit, **kw
        ) as resp:
            body = await resp.json()
            return f"{method} {path}", resp.status, body, time.monotonic() - started
    except TimeoutError:
        return f"{method} {path}", -1, {}, time.monotonic() - started


def assert_clear(outcome: Outcome, center: str) -> None:
    what, status, body, seconds = outcome
    assert status != -1, f"{what} hung for {seconds:.1f}s"
    assert seconds < SUBMIT_TIMEOUT + MARGIN, f"{what} took {seconds:.1f}s"
    if status >= 400:
        error = body.get("error")
        assert isinstance(error, dict) and error.get("code") and error.get("message"), outcome
        if status == 503:
            assert error["code"] == "center_unavailable" and error["center"] == center, outcome
        assert status in (503, 504, 429), outcome


async def wait_final(
    session: aiohttp.ClientSession, gw: Gateway, job_id: str, timeout: float
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            _, status, body, _ = await call(session, gw, "GET", f"/v1/jobs/{job_id}")
            if status == 200 and body["state"] in TERMINAL:
                return body
            await asyncio.sleep(0.3)


def squeue_comments(testbed: Testbed, cid: str) -> Counter[str]:
    argv = testbed.ssh_command(cid, "squeue -h -u alice -O 'JobID:|,Comment:'", user="alice")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    comments = [line.split("|", 1)[1].strip() for line in out.splitlines() if "|" in line]
    return Counter(c for c in comments if c.startswith("hpcfed:"))


def sigkill_sshd(testbed: Testbed, cid: str) -> int:
    """SIGKILL a center's sshd listener and every session under it: a login node gone."""
    pid = testbed.daemon_pid(cid, "sshd")
    assert pid is not None, f"sshd of {cid} is not running"
    victims = [pid, *descendants(pid)]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return len(victims)


async def test_an_ssh_cut_fails_requests_clearly_and_the_pool_recovers_by_itself(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(fault_config(testbed_config, "centera", "centerb"))
    outcomes: list[Outcome] = []
    created: list[str] = []
    cutting = asyncio.Event()
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            _, status, body, _ = await call(
                session, gw, "POST", "/v1/jobs", json=job("centera", "sleep", "8")
            )
            assert status == 201, body
            created.append(body["id"])

        async def load(n: int) -> None:
            while not stop.is_set():
                outcome = await call(session, gw, "POST", "/v1/jobs", json=job("centera"))
                if cutting.is_set():
                    outcomes.append(outcome)
                if outcome[1] in (201, 202):
                    created.append(outcome[2]["id"])
                if created:
                    got = await call(session, gw, "GET", f"/v1/jobs/{created[n % len(created)]}")
                    if cutting.is_set():
                        outcomes.append(got)
                await asyncio.sleep(0.3)

        loaders = [asyncio.create_task(load(n)) for n in range(3)]
        await asyncio.sleep(2)
        cutting.set()
        killed = await asyncio.to_thread(sigkill_sshd, testbed, "centera")
        try:
            await asyncio.sleep(4)
        finally:
            await asyncio.to_thread(testbed.start_daemon, "centera", "sshd")
        back = time.monotonic()
        await asyncio.sleep(3)
        cutting.clear()
        stop.set()
        await asyncio.gather(*loaders)

        # Recovery: a new submission succeeds through the same gateway and pool.
        recovered: float | None = None
        while time.monotonic() - back < 60:
            _, status, body, _ = await call(session, gw, "POST", "/v1/jobs", json=job("centera"))
            if status == 201:
                recovered = time.monotonic() - back
                created.append(body["id"])
                break
            await asyncio.sleep(0.2)
        assert recovered is not None, "no submission succeeded within 60s of sshd's return"

        for outcome in outcomes:
            assert_clear(outcome, "centera")
        finals = {j: await wait_final(session, gw, j, 120) for j in created}
    longest = max(o[3] for o in outcomes)
    codes = Counter(o[1] for o in outcomes)
    states = Counter((f["state"], f["exit_code"]) for f in finals.values())
    print(
        f"ssh cut: killed {killed} sshd processes; {len(outcomes)} requests in flight "
        f"{dict(codes)}; longest {longest:.2f}s; pool recovered {recovered:.2f}s after "
        f"sshd returned; {len(finals)} jobs final {dict(states)}"
    )
    odd = [
        (f["id"], f["state"], f["native_state"], f["reason"])
        for f in finals.values()
        if (f["state"], f["exit_code"]) != ("COMPLETED", 0)
    ]
    for line in odd:
        print("not COMPLETED/0:", line)
    assert not odd, odd
    comments = await asyncio.to_thread(squeue_comments, testbed, "centera")
    assert all(n == 1 for n in comments.values()), [c for c, n in comments.items() if n > 1]
    for job_id in created:
        assert comments[f"hpcfed:{job_id}"] <= 1


def center_times(final: dict[str, Any]) -> tuple[float, float]:
    """When a finished job started and ended, as its center tells it (epoch seconds)."""
    usage = final["usage"]
    assert usage["source"] == "center", usage  # not the gateway's own sightings
    started, ended = (datetime.fromisoformat(usage[k]) for k in ("started_at", "ended_at"))
    return started.timestamp(), ended.timestamp()


# The PBS-dialect center (Slurm underneath): no other test of this file uses it.
CTLD_CENTER = "centerc"


async def test_a_scheduler_stopped_for_60s_fails_no_job_and_all_complete(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, testbed: Testbed
) -> None:
    gw = await start_gateway(fault_config(testbed_config, CTLD_CENTER))
    async with aiohttp.ClientSession() as session:
        ids: list[str] = []
        # The first three run before slurmctld stops; the 75 s one still runs when it
        # returns (checked below).
        for seconds in ("20", "30", "75", "5"):
            _, status, body, _ = await call(
                session, gw, "POST", "/v1/jobs", json=job(CTLD_CENTER, "sleep", seconds)
            )
            assert status == 201, body
            ids.append(body["id"])
        async with asyncio.timeout(60):
            while True:
                seen = [(await call(session, gw, "GET", f"/v1/jobs/{j}"))[2] for j in ids[:3]]
                if all(s["state"] == "RUNNING" for s in seen):
                    break
                await asyncio.sleep(0.3)
        during: Counter[str] = Counter()
        await asyncio.to_thread(testbed.stop_daemon, CTLD_CENTER, "slurmctld")
        stopped, stopped_at = time.monotonic(), time.time()
        try:
            while time.monotonic() - stopped < 60:
                for j in ids:
                    _, status, body, _ = await call(session, gw, "GET", f"/v1/jobs/{j}")
                    assert status in (200, 202), body
                    assert body["state"] not in BAD_ENDINGS, (
                        body["state"],
                        body["reason"],
                        body["id"],
                    )
                    during[body["state"]] += 1
                await asyncio.sleep(3)
        finally:
            await asyncio.to_thread(testbed.start_daemon, CTLD_CENTER, "slurmctld")
        back, back_at = time.monotonic(), time.time()
        finals = {j: await wait_final(session, gw, j, 240) for j in ids}
        took = time.monotonic() - back
    print(
        f"slurmctld stopped {back - stopped:.1f}s; states seen during {dict(during)}; "
        f"all final {took:.1f}s after it returned: "
        f"{[(f['state'], f['exit_code']) for f in finals.values()]}"
    )
    for final in finals.values():
        assert (final["state"], final["exit_code"]) == ("COMPLETED", 0), (
            final["state"],
            final["exit_code"],
            final["reason"],
            final["id"],
        )
    # The longest job ran across the whole outage: started before slurmctld stopped,
    # ended after it returned.
    started, ended = center_times(finals[ids[2]])
    print(f"the longest job ended {ended - back_at:.1f}s after slurmctld returned")
    assert started < stopped_at and ended > back_at, finals[ids[2]]["usage"]


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word: a hung login node."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(256)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


HUNG_USERS = 70  # logins at the hung center: more hung connects than the pool has threads


async def test_a_hung_center_does_not_delay_requests_to_another(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    base = testbed_config.centers["centera"]
    with silent_listener() as port:
        assert base.ssh is not None
        hung = base.model_copy(
            update={
                "id": "hung",
                "ssh": base.ssh.model_copy(update={"port": port, "connect_timeout": 20.0}),
                "users": {
                    **base.users,
                    **{
                        f"u{n}": base.users["alice"].model_copy(update={"login": f"u{n}"})
                        for n in range(HUNG_USERS)
                    },
                },
            }
        )
        config = config_with(
            testbed_config,
            testbed_config.data_dir,
            centers={"centera": base, "hung": hung},
            admission=AdmissionConfig(required=False),
            health=HealthConfig(probe_interval=600.0, probe_timeout=5.0),
            submit_timeout=SUBMIT_TIMEOUT,
        )
        users = ["alice", *(f"u{n}" for n in range(HUNG_USERS))]
        gw = await start_gateway(config, users)
        async with aiohttp.ClientSession() as session:

            async def as_user(user: str) -> Outcome:
                token = {"Authorization": f"Bearer {gw.tokens[user]}"}
                return await call(session, gw, "POST", "/v1/jobs", json=job("hung"), headers=token)

            stuck = [asyncio.create_task(as_user(f"u{n}")) for n in range(HUNG_USERS)]
            await asyncio.sleep(1.0)  # every hung connect holds a thread now
            outcome = await call(session, gw, "POST", "/v1/jobs", json=job("centera"))
            fetched = await call(session, gw, "GET", f"/v1/jobs/{outcome[2].get('id')}")
            hung_outcomes = await asyncio.gather(*stuck)
    print(
        f"hung center: POST to centera took {outcome[3]:.2f}s beside {HUNG_USERS} "
        f"hung submissions (those took up to {max(o[3] for o in hung_outcomes):.2f}s, "
        f"statuses {dict(Counter(o[1] for o in hung_outcomes))})"
    )
    assert outcome[1] == 201 and outcome[3] < 3.0, outcome
    assert fetched[1] in (200, 202)
    for hung_outcome in hung_outcomes:
        assert hung_outcome[1] in (201, 202, 503, 504), hung_outcome
        assert hung_outcome[3] < SUBMIT_TIMEOUT + MARGIN, hung_outcome
