"""Where state is kept: one backend per engine, each implementing the domain
packages' store contracts, all built here from the config (`store.kind`).

The contracts: `gateway.jobs.store.JobStore` (jobs and their idempotency keys),
`gateway.data.store.TransferStore`, `gateway.centers.evaluation.store.EvaluationStore`,
`gateway.centers.probes.ProbeStore`, `gateway.identity.audit.AuditTrail` and
`gateway.identity.vault.VaultEntries` (the vault's encrypted entries, and so the
signing keyring). Each backend lives in a package of its own here (`sqlite/`);
nothing outside this package names one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.centers.evaluation.store import EvaluationStore
    from gateway.centers.probes import ProbeStore
    from gateway.config import LoadedConfig
    from gateway.data.store import TransferStore
    from gateway.identity.audit import AuditTrail
    from gateway.identity.vault import VaultEntries
    from gateway.jobs.store import JobStore

__all__ = ["Stores", "open_stores"]


@dataclass
class Stores:
    """Every store of the gateway, of one backend. `audit` and `vault` serve at once;
    the others after `await stores.open()`."""

    jobs: JobStore
    transfers: TransferStore
    evaluations: EvaluationStore
    probes: ProbeStore
    audit: AuditTrail
    vault: VaultEntries

    async def open(self) -> None:
        opened = []
        try:
            for store in (self.jobs, self.probes, self.transfers, self.evaluations):
                await store.open()
                opened.append(store)
        except BaseException:
            for store in reversed(opened):
                await store.close()
            raise

    async def close(self) -> None:
        """Close every store (after what uses them), the audit trail last."""
        try:
            for store in (self.evaluations, self.transfers, self.probes, self.jobs):
                await store.close()
        finally:
            self.audit.close()


def open_stores(config: LoadedConfig) -> Stores:
    """The stores of the configured backend, `config.gateway.store.kind` (the config
    refuses an unknown kind when it is loaded)."""
    kind = config.gateway.store.kind
    if kind == "sqlite":
        from gateway.store.sqlite.backend import open_sqlite

        return open_sqlite(config)
    raise ValueError(f"store.kind: no backend {kind!r}")  # unreachable: the config refuses it
