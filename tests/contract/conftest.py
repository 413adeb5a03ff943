"""Every implementation of every store contract, as fixtures the contract suites
run over. A new backend adds one entry per contract to `BACKENDS` below.

Each fixture gives a `Backend`: `make()` builds a store of the implementation at
one place (the same place each call, so a second store sees what the first
kept: for PostgreSQL, a second replica); the suite opens and closes what it makes.
A place is a directory (`place / "name"`) and, for PostgreSQL, a fresh database of
the testbed's server with the schema migrated (`place.dsn`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from gateway.identity.audit import AuditLog
from gateway.identity.vault import VaultFile
from gateway.jobs.events import EventBus, PublishingJobStore
from gateway.store.leases import LocalLeases
from gateway.store.postgres.apps import PgAppStore
from gateway.store.postgres.audit import PgAuditTrail
from gateway.store.postgres.evaluations import PgEvaluationStore
from gateway.store.postgres.jobs import PgJobStore
from gateway.store.postgres.leases import PgLeases
from gateway.store.postgres.pool import PgPool
from gateway.store.postgres.probes import PgProbeStore
from gateway.store.postgres.schema import PgMigrator
from gateway.store.postgres.transfers import PgTransferStore
from gateway.store.postgres.vault import PgVaultEntries
from gateway.store.sqlite.apps import SQLiteAppStore
from gateway.store.sqlite.evaluations import SQLiteEvaluationStore
from gateway.store.sqlite.jobs import SQLiteJobStore
from gateway.store.sqlite.probes import SQLiteProbeStore
from gateway.store.sqlite.transfers import SQLiteTransferStore


@dataclass
class Place:
    """Where a backend's stores keep what they keep, the same for every store of a test."""

    dir: Path
    request: pytest.FixtureRequest = field(repr=False)

    def __truediv__(self, name: str) -> Path:
        return self.dir / name

    @cached_property
    def dsn(self) -> str:
        """A fresh database of the testbed's PostgreSQL, migrated to the known schema."""
        dsn: str = self.request.getfixturevalue("pg_dsn")

        async def migrate() -> None:
            pool = PgPool(dsn, min_size=1, max_size=1)
            await pool.open()
            try:
                await PgMigrator(pool).migrate()
            finally:
                await pool.close()

        # On a thread of its own: the test's event loop may be running already.
        failed: list[BaseException] = []
        thread = threading.Thread(target=lambda: _run(migrate, failed))
        thread.start()
        thread.join()
        if failed:
            raise failed[0]
        return dsn


def _run(fn: Callable[[], Any], failed: list[BaseException]) -> None:
    try:
        asyncio.run(fn())
    except BaseException as exc:
        failed.append(exc)


def pg(cls: type) -> Callable[[Place], Any]:
    """A PostgreSQL store of `cls` on a pool of its own, as one replica's (in the
    gateway the stores share the pool Stores opens)."""

    class Replica(cls):  # type: ignore[misc, valid-type]
        def __init__(self, dsn: str) -> None:
            super().__init__(PgPool(dsn, min_size=1, max_size=4))

        async def open(self) -> None:
            await self.pool.open()
            await super().open()

        async def close(self) -> None:
            try:
                await super().close()
            finally:
                await self.pool.close()

    Replica.__name__ = Replica.__qualname__ = cls.__name__
    return lambda place: Replica(place.dsn)


#: contract -> implementation name -> (a place -> a new store kept there).
BACKENDS: dict[str, dict[str, Callable[[Place], Any]]] = {
    "jobs": {
        "sqlite": lambda d: SQLiteJobStore(d / "hpcfed.db"),
        "sqlite-uncached": lambda d: SQLiteJobStore(d / "hpcfed.db", cache_size=0),
        # The wrapper every gateway job write passes: it must keep the contract too.
        "sqlite-publishing": lambda d: PublishingJobStore(
            SQLiteJobStore(d / "hpcfed.db"), EventBus()
        ),
        "postgres": pg(PgJobStore),
    },
    "transfers": {
        "sqlite": lambda d: SQLiteTransferStore(d / "hpcfed.db"),
        "postgres": pg(PgTransferStore),
    },
    "evaluations": {
        "sqlite": lambda d: SQLiteEvaluationStore(d / "hpcfed.db"),
        "postgres": pg(PgEvaluationStore),
    },
    "probes": {
        "sqlite": lambda d: SQLiteProbeStore(d / "hpcfed.db"),
        "postgres": pg(PgProbeStore),
    },
    "apps": {
        "sqlite": lambda d: SQLiteAppStore(d / "hpcfed.db"),
        "postgres": pg(PgAppStore),
    },
    "audit": {
        "file": lambda d: AuditLog(d / "audit.log"),
        "postgres": lambda place: PgAuditTrail(place.dsn),
    },
    "vault": {
        "file": lambda d: VaultFile(d / "vault.json"),
        "postgres": lambda place: PgVaultEntries(place.dsn),
    },
    "leases": {
        "local": lambda d: LocalLeases(),
        "postgres": pg(PgLeases),
    },
    # Leases that several replicas share (two stores at one place: two holders); the
    # in-memory ones serve one process, whose leases are all its own.
    "shared-leases": {
        "postgres": pg(PgLeases),
    },
}


@dataclass(frozen=True)
class Backend:
    name: str
    make: Callable[[], Any]


def _backend(contract: str) -> Any:
    @pytest.fixture(params=sorted(BACKENDS[contract]))
    def fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
        factory = BACKENDS[contract][request.param]
        place = Place(tmp_path / "state", request)
        made: list[Any] = []

        def make() -> Any:
            made.append(factory(place))
            return made[-1]

        yield Backend(request.param, make)
        for store in made:  # what holds a connection of its own and no close of its contract
            if isinstance(store, PgVaultEntries):
                store.close()

    return fixture


job_backend = _backend("jobs")
transfer_backend = _backend("transfers")
evaluation_backend = _backend("evaluations")
probe_backend = _backend("probes")
app_backend = _backend("apps")
audit_backend = _backend("audit")
vault_backend = _backend("vault")
lease_backend = _backend("leases")
shared_lease_backend = _backend("shared-leases")


async def _opened(backend: Backend) -> Any:
    store = backend.make()
    await store.open()
    return store


@pytest.fixture
async def job_store(job_backend: Backend):
    store = await _opened(job_backend)
    yield store
    await store.close()


@pytest.fixture
async def transfer_store(transfer_backend: Backend):
    store = await _opened(transfer_backend)
    yield store
    await store.close()


@pytest.fixture
async def evaluation_store(evaluation_backend: Backend):
    store = await _opened(evaluation_backend)
    yield store
    await store.close()


@pytest.fixture
async def probe_store(probe_backend: Backend):
    store = await _opened(probe_backend)
    yield store
    await store.close()


@pytest.fixture
async def app_store(app_backend: Backend):
    store = await _opened(app_backend)
    yield store
    await store.close()


@pytest.fixture
def audit_trail(audit_backend: Backend):
    trail = audit_backend.make()
    yield trail
    trail.close()
