"""The PostgreSQL backend against the testbed's server: its migrations (applied once
by replicas racing, a newer schema refused, manual mode waiting for `hpcfed db
migrate`), what two replicas on one database see of each other's writes, writes
under a lease that moved on, and a server that cannot be reached."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from adapters.base import JobState
from gateway.config import load_config
from gateway.http.errors import as_domain_error, status_of
from gateway.identity.vault import VaultError
from gateway.jobs.store import JobQuery
from gateway.store import open_stores
from gateway.store.contract import StoreUnavailable
from gateway.store.leases import Lease, LeaseLost
from gateway.store.migrations import SchemaBehind, SchemaTooNew
from gateway.store.postgres import schema
from gateway.store.postgres.audit import PgAuditTrail
from gateway.store.postgres.jobs import PgJobStore
from gateway.store.postgres.pool import PgPool
from gateway.store.postgres.schema import PgMigrator
from gateway.store.postgres.vault import PgVaultEntries
from gateway.units import utcnow
from tests.contract.records import job

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def config_file(tmp_path: Path, dsn: str, **store: object) -> Path:
    path = tmp_path / "gateway.yaml"
    document = {
        "data_dir": str(tmp_path / "data"),
        "center_files": [str(REPO / "configs" / "centers" / "local.yaml")],
        "store": {"kind": "postgres", "dsn": dsn, "pool": {"min_size": 1, "max_size": 4}, **store},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def sql(dsn: str, statement: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, args)
        return cur.fetchall() if cur.description else []


def versions(dsn: str) -> list[int]:
    return [int(str(r[0])) for r in sql(dsn, "SELECT version FROM schema_migrations ORDER BY 1")]


# ---------------------------------------------------------------- migrations


async def test_a_fresh_database_is_migrated_to_the_known_version(
    tmp_path: Path, pg_dsn: str
) -> None:
    config = load_config(config_file(tmp_path, pg_dsn))
    for _ in range(2):  # a second start applies nothing again
        stores = open_stores(config)
        await stores.open()
        try:
            status = await stores.migrator.status()
            assert (status.backend, status.current, status.pending) == (
                "postgres",
                schema.KNOWN,
                [],
            )
            record = job()
            await stores.jobs.insert(record)
            assert await stores.jobs.get(record.id) == record
        finally:
            await stores.close()
    assert versions(pg_dsn) == [m.version for m in schema.MIGRATIONS]


async def test_migrators_racing_on_one_database_apply_each_migration_once(pg_dsn: str) -> None:
    """Replicas started at once: each migration runs once (a second CREATE TABLE of
    the same table would fail), and every migrator ends at the known version."""
    pools = [PgPool(pg_dsn, min_size=1, max_size=1) for _ in range(4)]
    for pool in pools:
        await pool.open()
    try:
        statuses = await asyncio.gather(*(PgMigrator(p).migrate() for p in pools))
    finally:
        for pool in pools:
            await pool.close()
    assert {s.current for s in statuses} == {schema.KNOWN}
    assert all(not s.pending for s in statuses)
    assert versions(pg_dsn) == [m.version for m in schema.MIGRATIONS]


async def test_a_schema_newer_than_known_refuses_to_start_naming_both_versions(
    tmp_path: Path, pg_dsn: str
) -> None:
    config = load_config(config_file(tmp_path, pg_dsn))
    stores = open_stores(config)
    await stores.open()
    await stores.close()
    sql(
        pg_dsn,
        "INSERT INTO schema_migrations (version, name) VALUES (%s, 'from a newer release')",
        (schema.KNOWN + 1,),
    )
    stores = open_stores(config)
    with pytest.raises(SchemaTooNew) as refused:
        await stores.open()
    message = str(refused.value)
    assert "postgres schema" in message
    assert f"version {schema.KNOWN + 1}" in message and f"knows ({schema.KNOWN})" in message
    assert versions(pg_dsn)[-1] == schema.KNOWN + 1
    # `hpcfed db migrate` refuses it too, and changes nothing.
    pools = PgPool(pg_dsn, min_size=1, max_size=1)
    await pools.open()
    try:
        with pytest.raises(SchemaTooNew):
            await PgMigrator(pools).migrate()
    finally:
        await pools.close()


async def test_manual_migration_waits_for_db_migrate(tmp_path: Path, pg_dsn: str) -> None:
    path = config_file(tmp_path, pg_dsn, migrate="manual")
    stores = open_stores(load_config(path))
    with pytest.raises(SchemaBehind, match="hpcfed db migrate") as behind:
        await stores.open()
    assert "postgres schema is at version 0" in str(behind.value)
    assert sql(pg_dsn, "SELECT to_regclass('jobs')") == [(None,)]  # nothing applied

    hpcfed = [sys.executable, "-m", "gateway.cli"]
    run = {"capture_output": True, "text": True, "timeout": 60, "stdin": subprocess.DEVNULL}
    done = subprocess.run([*hpcfed, "db", "migrate", "--config", str(path), "--json"], **run)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["backend"], status["current"], status["pending"]) == (
        "postgres",
        schema.KNOWN,
        [],
    )
    stores = open_stores(load_config(path))
    await stores.open()
    await stores.close()


async def test_a_server_that_cannot_be_reached_is_store_unavailable(tmp_path: Path) -> None:
    dsn = "host=127.0.0.1 port=1 dbname=hpcfed user=hpcfed connect_timeout=2"
    stores = open_stores(load_config(config_file(tmp_path, dsn)))
    with pytest.raises(StoreUnavailable, match="postgres unavailable"):
        await stores.open()
    # The vault's entries (a blocking contract) fail the same way: a VaultError to the
    # vault's users, and unavailability (503, not 500) to the API that asked.
    with pytest.raises(VaultError) as refused:
        stores.vault.read()
    assert isinstance(refused.value, StoreUnavailable), refused.value
    assert status_of(as_domain_error(refused.value)) == 503


# ---------------------------------------------------------------- two replicas


async def _replicas(dsn: str, n: int = 2) -> list[PgJobStore]:
    first = PgPool(dsn, min_size=1, max_size=2)
    await first.open()
    await PgMigrator(first).migrate()
    pools = [first, *(PgPool(dsn, min_size=1, max_size=2) for _ in range(n - 1))]
    for pool in pools[1:]:
        await pool.open()
    return [PgJobStore(p) for p in pools]


async def _close(stores: list[PgJobStore]) -> None:
    for store in stores:
        await store.pool.close()


async def test_a_replica_reads_what_another_wrote_after_it_read(pg_dsn: str) -> None:
    """No replica keeps a record it read: an update on one is what the other reads next."""
    a, b = await _replicas(pg_dsn)
    try:
        record = job()
        await a.insert(record)
        assert await b.get(record.id) == record
        updated = await a.update(record.id, state=JobState.RUNNING, native_id="42")
        assert await b.get(record.id) == updated
        page = await b.list(JobQuery(owner="alice"))
        assert page.jobs == [updated]
        assert [r.id for r in await b.active()] == [record.id]
    finally:
        await _close([a, b])


async def test_writes_under_a_lease_that_moved_on_are_refused_whole(pg_dsn: str) -> None:
    (store,) = await _replicas(pg_dsn, 1)
    try:
        records = [job(), job()]
        await store.insert_many(records)
        sql(
            pg_dsn,
            "INSERT INTO leases VALUES ('center/local', 'replica-a', 7, now() + interval '1 min')",
        )
        held = Lease("center/local", "replica-a", 7, 0.0)
        changes = [(r.id, {"native_id": "1"}) for r in records]
        assert all(r.native_id == "1" for r in await store.update_many(changes, lease=held))

        taken = [Lease("center/local", "replica-a", 6, 0.0), Lease("center/local", "b", 7, 0.0)]
        for lease in taken:  # an older fence, another holder
            with pytest.raises(LeaseLost):
                await store.update_many([(r.id, {"native_id": "2"}) for r in records], lease=lease)
        sql(pg_dsn, "UPDATE leases SET expires_at = now() - interval '1 s'")
        with pytest.raises(LeaseLost) as lost:
            await store.update_many([(r.id, {"native_id": "3"}) for r in records], lease=held)
        assert lost.value.lease == held
        for record in records:
            read = await store.get(record.id)
            assert read is not None and read.native_id == "1"
    finally:
        await _close([store])


async def test_text_postgres_cannot_hold_does_not_fail_the_write(pg_dsn: str) -> None:
    """A center's message with a NUL in it: the job is still updated, the NUL replaced."""
    (store,) = await _replicas(pg_dsn, 1)
    try:
        record = job()
        await store.insert(record)
        updated = await store.update(record.id, reason="bad\0byte", finished_at=utcnow())
        assert updated.reason == "bad\ufffdbyte"
        assert await store.get(record.id) == updated
    finally:
        await _close([store])


# ---------------------------------------------------------------- connections cut


def cut_connections(dsn: str) -> int:
    """End every other session on the database (as a server restart would)."""
    found = sql(
        dsn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return int(str(found[0][0]))


async def test_connections_the_server_cut_are_made_again(pg_dsn: str) -> None:
    """The job store's pool, the audit trail and the vault's entries each serve on
    after their connections were cut: each call after the cut succeeds, and the
    audit entry sent on the fresh connection is kept once."""
    (store,) = await _replicas(pg_dsn, 1)
    trail = PgAuditTrail(pg_dsn)
    entries = PgVaultEntries(pg_dsn)
    try:
        record = job()
        await store.insert(record)
        trail.record(action="one", actor=None, outcome="ok", source="cli")
        with entries.change() as stored:
            stored["signing/k1"] = {"created": "2026-01-01", "meta": {}, "secret": "s"}
        assert cut_connections(pg_dsn) >= 3
        assert await store.get(record.id) == record
        trail.record(action="two", actor=None, outcome="ok", source="cli")
        assert [e["action"] for e in trail.entries()] == ["one", "two"]
        assert set(entries.read()) == {"signing/k1"}
        assert cut_connections(pg_dsn) >= 3
        with entries.change() as stored:
            stored["signing/k2"] = {"created": "2026-01-02", "meta": {}, "secret": "t"}
        assert set(entries.read()) == {"signing/k1", "signing/k2"}
    finally:
        trail.close()
        entries.close()
        await _close([store])
