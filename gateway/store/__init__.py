"""Where state is kept: one backend per engine, each implementing the domain
packages' store contracts, all built here from the config (`store.kind`).

The contracts: `gateway.jobs.store.JobStore` (jobs and their idempotency keys),
`gateway.data.store.TransferStore`, `gateway.centers.evaluation.store.EvaluationStore`,
`gateway.centers.probes.ProbeStore`, `gateway.apps.store.AppStore` (application
definitions and canary verifications), `gateway.identity.audit.AuditTrail` and
`gateway.identity.vault.VaultEntries` (the vault's encrypted entries, and so the
signing keyring). Each backend lives in a package of its own here (`sqlite/`,
`postgres/`); nothing outside this package names one. Each has its versioned
schema migrations (migrations.py), applied or checked when the stores open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.apps.store import AppStore
    from gateway.centers.evaluation.store import EvaluationStore
    from gateway.centers.probes import ProbeStore
    from gateway.config import LoadedConfig
    from gateway.data.store import TransferStore
    from gateway.identity.audit import AuditTrail
    from gateway.identity.vault import VaultEntries
    from gateway.jobs.feeds import JobFeed
    from gateway.jobs.store import JobStore
    from gateway.store.contract import Store
    from gateway.store.migrations import Migrator

from gateway.store.leases import Leases, LocalLeases

__all__ = ["Stores", "open_stores"]


@dataclass
class Stores:
    """Every store of the gateway, of one backend. `audit` and `vault` serve at once;
    the others after `await stores.open()`, which first brings the schema up to date
    or refuses it (`migrate`: the config's `store.migrate`, auto or manual).
    `shared`, when the backend has one, is what its stores share (a connection
    pool): opened before them, closed after."""

    jobs: JobStore
    transfers: TransferStore
    evaluations: EvaluationStore
    probes: ProbeStore
    apps: AppStore
    audit: AuditTrail
    vault: VaultEntries
    migrator: Migrator
    migrate: str = "auto"
    shared: Store | None = None
    #: Who does which background work (gateway/store/leases.py): in memory for a
    #: backend that serves one process.
    leases: Leases = field(default_factory=LocalLeases)
    #: Where job events come from (gateway/jobs/events.py), started by the app: None
    #: for a backend that serves one process (the app's in-process feed).
    feed: JobFeed | None = None

    async def open(self) -> None:
        opened: list[Store] = []
        try:
            if self.shared is not None:
                await self.shared.open()
                opened.append(self.shared)
            await self.migrator.ensure(self.migrate)
            for store in (
                self.leases,
                self.jobs,
                self.probes,
                self.transfers,
                self.evaluations,
                self.apps,
            ):
                await store.open()
                opened.append(store)
        except BaseException:
            for store in reversed(opened):
                await store.close()
            raise

    async def close(self) -> None:
        """Close every store (after what uses them), the audit trail last."""
        try:
            for store in (
                self.apps,
                self.evaluations,
                self.transfers,
                self.probes,
                self.jobs,
                self.leases,
            ):
                await store.close()
        finally:
            try:
                self.audit.close()
                self.vault.close()
            finally:
                if self.shared is not None:
                    await self.shared.close()


def open_stores(config: LoadedConfig) -> Stores:
    """The stores of the configured backend, `config.gateway.store.kind` (the config
    refuses an unknown kind when it is loaded)."""
    kind = config.gateway.store.kind
    if kind == "sqlite":
        from gateway.store.sqlite.backend import open_sqlite

        return open_sqlite(config)
    if kind == "postgres":
        from gateway.store.postgres.backend import open_postgres

        return open_postgres(config)
    raise ValueError(f"store.kind: no backend {kind!r}")  # unreachable: the config refuses it
