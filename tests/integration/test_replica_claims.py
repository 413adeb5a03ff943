"""Work claimed once among replicas, tokens honoured by every replica, and a store
outage answered with 503 `store_unavailable`.

Single-process first: the error answer of a store out of reach on a real HTTP
server; two keyrings on one PostgreSQL vault (two replicas' worth) seeing each
other's rotations and retirements; the evaluation service leaving a RUNNING
evaluation alone while its lease is held elsewhere and finishing it once it is
free. Then real `hpcfed serve` replicas on one PostgreSQL database
(tests/integration/_replicas.py): a token issued through A verifies on B; a key
rotated with `hpcfed token rotate-key` is honoured on B without restart; a
transfer accepted by A, which is killed with SIGKILL mid-copy, is completed once
by B; and PostgreSQL stopped for 10 s under reads and submissions gets only 2xx
or 503 `store_unavailable`, and afterwards every replica answers again and every
accepted job exists once.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.fernet import Fernet

from gateway.centers.evaluation.service import STOPPED, EvaluationService, evaluation_lease
from gateway.centers.evaluation.suite import new_record
from gateway.config import LoadedConfig
from gateway.config_models import AuthConfig
from gateway.http.errors import error_middleware
from gateway.identity.keyring import Keyring
from gateway.identity.tokens import TokenError, TokenIssuer
from gateway.identity.vault import Vault
from gateway.identity.verifier import TokenVerifier
from gateway.store import open_stores
from gateway.store.contract import StoreError, StoreUnavailable
from gateway.store.leases import Lease, LocalLeases
from tests.integration._replicas import replicas
from tests.integration._served import HPCFED, ServedGateway
from tests.integration.test_crash_recovery import report
from tests.testbed import Testbed
from tests.testbed import postgres as pg

pytestmark = pytest.mark.integration

HOME = Path("/home/alice")  # the testbed's job user; all centers share this machine's homes
MiB = 1 << 20
#: The outage the issue names.
OUTAGE = 10.0
#: Liveness bounds (not timings): far above the leases' ttl and sweep interval.
TAKEOVER_BOUND = 120.0
RECOVERY_BOUND = 60.0


async def wait_for(what: str, bound: float, check: Callable[[], Awaitable[Any]]) -> Any:
    deadline = time.monotonic() + bound
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {bound:g}s"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- one process


async def test_a_store_out_of_reach_is_503_store_unavailable_and_other_store_errors_500() -> None:
    secret = "postgresql://hpcfed:hunter2@10.9.8.7:5432/db"

    async def unavailable(request: web.Request) -> web.Response:
        raise StoreUnavailable(f"postgres unavailable: connection to {secret} refused")

    async def broken(request: web.Request) -> web.Response:
        raise StoreError(f"postgres: syntax error near {secret}")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/unavailable", unavailable)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/unavailable") as resp:
                text = await resp.text()
                assert resp.status == 503, text
                assert json.loads(text)["error"]["code"] == "store_unavailable"
                assert int(resp.headers["Retry-After"]) >= 1
            async with session.get(f"http://127.0.0.1:{port}/broken") as resp:
                broken_text = await resp.text()
                assert resp.status == 500, broken_text
                assert json.loads(broken_text)["error"]["code"] == "internal_error"
                assert "Retry-After" not in resp.headers
    finally:
        await runner.cleanup()
    for answer in (text, broken_text):
        assert "hunter2" not in answer and "10.9.8.7" not in answer


@pytest.fixture
def pg_vaults(pg_dsn: str) -> Iterator[tuple[Vault, Vault]]:
    """Two vaults on one database's entries (as two replicas hold them), one master key."""
    from gateway.store.postgres.vault import PgVaultEntries

    asyncio.run(_migrate(pg_dsn))
    key = Fernet.generate_key()
    a, b = PgVaultEntries(pg_dsn), PgVaultEntries(pg_dsn)
    try:
        yield Vault(a, key), Vault(b, key)
    finally:
        a.close()
        b.close()


async def _migrate(dsn: str) -> None:
    from gateway.store.postgres.pool import PgPool
    from gateway.store.postgres.schema import PgMigrator

    pool = PgPool(dsn, min_size=1, max_size=2)
    await pool.open()
    try:
        await PgMigrator(pool).ensure("auto")
    finally:
        await pool.close()


def test_a_key_rotated_through_one_keyring_verifies_at_once_through_another(
    pg_vaults: tuple[Vault, Vault], tmp_path: Path
) -> None:
    auth = AuthConfig()
    ring_a, ring_b = Keyring(pg_vaults[0]), Keyring(pg_vaults[1])
    first = ring_a.ensure()
    verifier_b = TokenVerifier(ring_b, auth, lambda p: tmp_path / p)
    issuer_a = TokenIssuer(ring_a, auth)

    async def check() -> None:
        old = issuer_a.issue("alice", ["researcher"]).token
        assert (await verifier_b.verify(old)).user == "alice"
        new_kid = ring_a.rotate()
        new = issuer_a.issue("alice", ["researcher"]).token
        assert jwt.get_unverified_header(new)["kid"] == new_kid != first
        # B read its keys before the rotation: the unknown kid is looked up at once.
        assert (await verifier_b.verify(new)).user == "alice"
        assert (await verifier_b.verify(old)).user == "alice"  # older keys still verify
        ring_a.retire(first)

        async def old_refused() -> bool:
            try:
                await verifier_b.verify(old)
            except TokenError:
                return True
            return False

        started = time.monotonic()
        await wait_for("a retired key refused through the other keyring", 30, old_refused)
        report("retired key refused elsewhere", {"s": round(time.monotonic() - started, 2)})
        assert (await verifier_b.verify(new)).user == "alice"

    asyncio.run(check())


class SharedLeases(LocalLeases):
    """The leases of one store as another replica (`holder`) sees them: the same table."""

    def __init__(self, other: LocalLeases, holder: str) -> None:
        super().__init__(holder)
        self._leases = other._leases
        self._other = other

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        self._fence = self._other._fence = max(self._fence, self._other._fence)
        lease = await super().acquire(name, ttl)
        self._other._fence = self._fence
        return lease


async def test_a_running_evaluation_is_left_alone_while_its_lease_is_held_elsewhere(
    local_config: LoadedConfig,
) -> None:
    stores = open_stores(local_config)
    await stores.open()
    mine = LocalLeases("replica-a")
    theirs = SharedLeases(mine, "replica-b")
    service = EvaluationService(
        stores.evaluations,
        None,
        None,
        local_config.gateway.admission,
        mine,  # type: ignore[arg-type]
    )
    try:
        record = new_record(str(uuid.uuid4()), "centera", "admin")
        held = await theirs.acquire(evaluation_lease("centera"), 60)
        assert held is not None
        await stores.evaluations.save(record)
        assert await service.finish_abandoned() == 0
        stored = await stores.evaluations.get(record.id)
        assert stored is not None and stored.state == "RUNNING"
        await theirs.release(held)  # its replica is gone: its lease is free
        assert await service.finish_abandoned() == 1
        stored = await stores.evaluations.get(record.id)
        assert stored is not None and (stored.state, stored.error) == ("ERROR", STOPPED)
        assert await mine.holders("evaluation/") == {}  # given up once stored
    finally:
        await service.close()
        await stores.close()


# ---------------------------------------------------------------- replicas


def _needs_shared_leases() -> None:
    pytest.importorskip(
        "gateway.store.postgres.leases", reason="the PostgreSQL leases are not there yet"
    )


def cli(gateway: ServedGateway, *args: str) -> str:
    result = subprocess.run(
        [*HPCFED, *args, "--config", str(gateway.config)],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def admin_token(gateway: ServedGateway) -> str:
    return cli(gateway, "token", "issue", "--user", "root", "--role", "admin").splitlines()[0]


async def get_status(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with session.get(
        f"{url}/v1/jobs", params={"limit": "1"}, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def issue_via(session: aiohttp.ClientSession, url: str, admin: str, user: str) -> str:
    body = {"user": user, "roles": ["researcher"]}
    async with session.post(
        f"{url}/v1/tokens", json=body, headers={"Authorization": f"Bearer {admin}"}
    ) as resp:
        payload = await resp.json()
        assert resp.status == 201, payload
        return str(payload["token"])


async def test_tokens_and_rotated_keys_of_one_replica_verify_on_another(
    tmp_path: Path, testbed: Testbed, pg_dsn: str
) -> None:
    tag = f"claims-{uuid.uuid4().hex[:8]}"
    with replicas(tmp_path, testbed, pg_dsn, tag) as (a, b):
        admin = admin_token(a)
        async with aiohttp.ClientSession() as session:
            token = await issue_via(session, a.url, admin, "alice")
            status, body = await get_status(session, b.url, token)
            assert status == 200, body
            old_kid = jwt.get_unverified_header(token)["kid"]
            cli(a, "token", "rotate-key")
            rotated = await issue_via(session, a.url, admin, "alice")
            assert jwt.get_unverified_header(rotated)["kid"] != old_kid
            status, body = await get_status(session, b.url, rotated)  # no restart of B
            assert status == 200, body
            status, body = await get_status(session, b.url, token)  # the old key verifies too
            assert status == 200, body
        assert a.proc is not None and b.proc is not None
        assert a.proc.poll() is None and b.proc.poll() is None


@pytest.fixture
def workdir() -> Iterator[str]:
    name = f"claims-test-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(HOME / name, ignore_errors=True)


async def test_a_transfer_whose_replica_is_killed_is_completed_once_by_another(
    tmp_path: Path, testbed: Testbed, pg_dsn: str, workdir: str
) -> None:
    _needs_shared_leases()
    tag = f"claims-{uuid.uuid4().hex[:8]}"
    data = os.urandom(200 * MiB)
    (HOME / workdir).mkdir()
    source = HOME / workdir / "big.bin"
    source.write_bytes(data)
    shutil.chown(HOME / workdir, "alice", "alice")
    shutil.chown(source, "alice", "alice")
    with replicas(tmp_path, testbed, pg_dsn, tag, centers=("centera", "centerc")) as (a, b):
        token = a.token()
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            body = {
                "source": {"center": "centera", "path": f"{workdir}/big.bin"},
                "destination": {"center": "centerc", "path": f"{workdir}/big-copy.bin"},
            }
            async with session.post(a.url + "/v1/transfers", json=body) as resp:
                transfer = await resp.json()
                assert resp.status == 202, transfer
            url_b = f"{b.url}/v1/transfers/{transfer['id']}"

            async def moving() -> dict[str, Any] | None:
                async with session.get(url_b) as resp:
                    seen = await resp.json()
                    assert resp.status == 200, seen
                return seen if seen["bytes_done"] > 0 else None

            seen = await wait_for("the copy under way", 60, moving)
            assert not seen["terminal"], seen
            a.kill9()  # mid-copy, its lease still held
            killed = time.monotonic()

            async def ended() -> dict[str, Any] | None:
                async with session.get(url_b) as resp:
                    seen = await resp.json()
                return seen if seen["terminal"] else None

            done = await wait_for("the transfer completed by B", TAKEOVER_BOUND, ended)
            report("transfer taken over", {"s": round(time.monotonic() - killed, 1)})
            assert done["state"] == "COMPLETED", done
            assert done["attempts"] == 2, done  # once by A, once by B
            expected = hashlib.sha256(data).hexdigest()
            assert done["files"][0]["sha256"] == expected
            copy = HOME / workdir / "big-copy.bin"
            assert hashlib.sha256(copy.read_bytes()).hexdigest() == expected
    log_b = b.log.read_text()
    assert log_b.count(f"transfer {transfer['id']}: resuming") == 1, log_b[-4000:]
    assert sorted(p.name for p in (HOME / workdir).iterdir()) == ["big-copy.bin", "big.bin"]


async def test_an_evaluation_running_on_one_replica_is_refused_on_another(
    tmp_path: Path, testbed: Testbed, pg_dsn: str
) -> None:
    _needs_shared_leases()
    tag = f"claims-{uuid.uuid4().hex[:8]}"
    with replicas(tmp_path, testbed, pg_dsn, tag) as (a, b):
        admin = admin_token(a)
        headers = {"Authorization": f"Bearer {admin}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(f"{a.url}/v1/centers/centera/evaluations") as resp:
                started = await resp.json()
                assert resp.status == 202, started
            async with session.post(f"{b.url}/v1/centers/centera/evaluations") as resp:
                refused = await resp.json()
                assert resp.status == 409, refused
                assert refused["error"]["code"] == "evaluation_running"
                assert refused["error"].get("evaluation") == started["id"]
            # B's start did not mark A's live evaluation interrupted.
            async with session.get(
                f"{b.url}/v1/centers/centera/evaluations/{started['id']}"
            ) as resp:
                seen = await resp.json()
                assert resp.status == 200, seen
                assert seen["state"] == "RUNNING", seen


async def hold_down(base: Path, seconds: float) -> int:
    """Keep the testbed's PostgreSQL stopped for `seconds` (stopped again should another
    test start it meanwhile: the server is shared); how many stops it took."""
    stops = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pg.running(base):
            await asyncio.to_thread(pg.stop_server, base)
            stops += 1
        await asyncio.sleep(0.1)
    return stops


def _spec(tag: str) -> dict[str, Any]:
    return {
        "name": tag,
        "command": "true",
        "center": "centera",
        "resources": {"walltime": "00:02:00"},
    }


async def test_postgres_stopped_under_load_gets_503_then_everything_resumes(
    tmp_path: Path, testbed: Testbed, pg_dsn: str
) -> None:
    tag = f"claims-{uuid.uuid4().hex[:8]}"
    with replicas(tmp_path, testbed, pg_dsn, tag) as gateways:
        token = gateways[0].token()
        headers = {"Authorization": f"Bearer {token}"}
        answers: collections.Counter[str] = collections.Counter()
        wrong: list[str] = []
        accepted: list[str] = []
        stop = asyncio.Event()

        async def worker(n: int, submitting: bool) -> None:
            i = 0
            async with aiohttp.ClientSession(headers=headers) as session:
                while not stop.is_set():
                    url = gateways[(n + i) % len(gateways)].url
                    i += 1
                    try:
                        if submitting:
                            key = f"{tag}-{n}-{i}"
                            request = session.post(
                                f"{url}/v1/jobs", json=_spec(tag), headers={"Idempotency-Key": key}
                            )
                        else:
                            request = session.get(f"{url}/v1/jobs", params={"limit": "20"})
                        async with request as resp:
                            body = await resp.json(content_type=None)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        wrong.append(f"{type(exc).__name__}: {exc}")
                        continue
                    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
                    answers[f"{resp.status} {code or ''}".strip()] += 1
                    if resp.status < 300:
                        if submitting:
                            accepted.append(body["id"])
                    elif resp.status != 503 or code != "store_unavailable":
                        wrong.append(f"{resp.status} {body}")
                    await asyncio.sleep(0.02)

        workers = [asyncio.create_task(worker(n, n % 2 == 0)) for n in range(6)]
        await asyncio.sleep(2)  # load before the outage
        stopped = time.monotonic()
        stops = await hold_down(testbed.base, OUTAGE)
        await asyncio.to_thread(pg.start_server, testbed.base)
        back = time.monotonic()

        async with aiohttp.ClientSession(headers=headers) as session:

            async def every_replica_answers() -> bool:
                for gateway in gateways:
                    status, _ = await get_status(session, gateway.url, token)
                    if status != 200:
                        return False
                return True

            await wait_for("every replica answering again", RECOVERY_BOUND, every_replica_answers)
            recovered = time.monotonic() - back
            await asyncio.sleep(2)  # load after the outage
            stop.set()
            await asyncio.gather(*workers)
            report(
                "postgres outage",
                {
                    "outage_s": round(back - stopped, 1),
                    "stops": stops,
                    "recovered_s": round(recovered, 2),
                    **{k.replace(" ", "_"): v for k, v in sorted(answers.items())},
                },
            )
            assert not wrong, wrong[:10]
            assert answers["503 store_unavailable"] > 0, answers  # the outage was seen
            assert accepted
            for gateway in gateways:
                assert gateway.proc is not None and gateway.proc.poll() is None  # no restart
                listed: collections.Counter[str] = collections.Counter()
                cursor: str | None = None
                while True:
                    params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
                    async with session.get(f"{gateway.url}/v1/jobs", params=params) as resp:
                        page = await resp.json()
                        assert resp.status == 200, page
                    listed.update(job["id"] for job in page["jobs"])
                    cursor = page.get("next_cursor")
                    if not cursor:
                        break
                assert all(listed[job_id] == 1 for job_id in accepted), "lost or doubled"
                assert len(set(accepted)) == len(accepted)
