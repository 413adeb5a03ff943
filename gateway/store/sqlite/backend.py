"""The stores of `store.kind: sqlite`: jobs, transfers, evaluations, probes and apps in
one database file (`store.path`), each store with its own connection; the audit
trail and the vault's entries in files of their own (`audit_log`, `vault.path`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.identity.audit import AuditLog
from gateway.identity.vault import VaultFile
from gateway.store import Stores
from gateway.store.sqlite.apps import SQLiteAppStore
from gateway.store.sqlite.evaluations import SQLiteEvaluationStore
from gateway.store.sqlite.jobs import SQLiteJobStore
from gateway.store.sqlite.probes import SQLiteProbeStore
from gateway.store.sqlite.schema import SQLiteMigrator
from gateway.store.sqlite.transfers import SQLiteTransferStore

if TYPE_CHECKING:
    from gateway.config import LoadedConfig


def open_sqlite(config: LoadedConfig) -> Stores:
    gw = config.gateway
    path = config.data_path(gw.store.path)
    return Stores(
        jobs=SQLiteJobStore(path),
        transfers=SQLiteTransferStore(path),
        evaluations=SQLiteEvaluationStore(path),
        probes=SQLiteProbeStore(path),
        apps=SQLiteAppStore(path),
        audit=AuditLog(config.data_path(gw.audit_log)),
        vault=VaultFile(config.data_path(gw.vault.path)),
        migrator=SQLiteMigrator(path),
        migrate=gw.store.migrate,
    )
