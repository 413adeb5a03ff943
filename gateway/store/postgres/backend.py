"""The stores of `store.kind: postgres`: every state of the gateway in one database
(`store.dsn`) that every replica shares, the async stores on one connection pool
per replica (`store.pool`), the audit trail and the vault's entries (blocking
contracts) on a connection each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.store import Stores
from gateway.store.postgres.apps import PgAppStore
from gateway.store.postgres.audit import PgAuditTrail
from gateway.store.postgres.evaluations import PgEvaluationStore
from gateway.store.postgres.events import PgJobFeed
from gateway.store.postgres.jobs import PgJobStore
from gateway.store.postgres.leases import PgLeases
from gateway.store.postgres.pool import PgPool
from gateway.store.postgres.probes import PgProbeStore
from gateway.store.postgres.schema import PgMigrator
from gateway.store.postgres.transfers import PgTransferStore
from gateway.store.postgres.vault import PgVaultEntries

if TYPE_CHECKING:
    from gateway.config import LoadedConfig


def open_postgres(config: LoadedConfig) -> Stores:
    store = config.gateway.store
    if store.dsn is None:  # the config refuses kind postgres without one
        raise ValueError("store.dsn: required with kind postgres")
    pool = PgPool(
        store.dsn,
        min_size=store.pool.min_size,
        max_size=store.pool.max_size,
        timeout=store.pool.timeout,
    )
    return Stores(
        jobs=PgJobStore(pool),
        transfers=PgTransferStore(pool),
        evaluations=PgEvaluationStore(pool),
        probes=PgProbeStore(pool),
        apps=PgAppStore(pool),
        audit=PgAuditTrail(store.dsn),
        vault=PgVaultEntries(store.dsn),
        migrator=PgMigrator(pool),
        migrate=store.migrate,
        shared=pool,
        leases=PgLeases(pool),
        feed=PgJobFeed(pool, store.dsn),
    )
