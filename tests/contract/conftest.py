"""Every implementation of every store contract, as fixtures the contract suites
run over. A new backend adds one entry per contract to `BACKENDS` below.

Each fixture gives a `Backend`: `make()` builds a store of the implementation at
one place (the same place each call, so a second store sees what the first
kept); the suite opens and closes what it makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.identity.audit import AuditLog
from gateway.identity.vault import VaultFile
from gateway.jobs.events import EventBus, PublishingJobStore
from gateway.store.sqlite.evaluations import SQLiteEvaluationStore
from gateway.store.sqlite.jobs import SQLiteJobStore
from gateway.store.sqlite.probes import SQLiteProbeStore
from gateway.store.sqlite.transfers import SQLiteTransferStore

#: contract -> implementation name -> (a directory -> a new store kept in it).
BACKENDS: dict[str, dict[str, Callable[[Path], Any]]] = {
    "jobs": {
        "sqlite": lambda d: SQLiteJobStore(d / "hpcfed.db"),
        "sqlite-uncached": lambda d: SQLiteJobStore(d / "hpcfed.db", cache_size=0),
        # The wrapper every gateway job write passes: it must keep the contract too.
        "sqlite-publishing": lambda d: PublishingJobStore(
            SQLiteJobStore(d / "hpcfed.db"), EventBus()
        ),
    },
    "transfers": {"sqlite": lambda d: SQLiteTransferStore(d / "hpcfed.db")},
    "evaluations": {"sqlite": lambda d: SQLiteEvaluationStore(d / "hpcfed.db")},
    "probes": {"sqlite": lambda d: SQLiteProbeStore(d / "hpcfed.db")},
    "audit": {"file": lambda d: AuditLog(d / "audit.log")},
    "vault": {"file": lambda d: VaultFile(d / "vault.json")},
}


@dataclass(frozen=True)
class Backend:
    name: str
    make: Callable[[], Any]


def _backend(contract: str) -> Any:
    @pytest.fixture(params=sorted(BACKENDS[contract]))
    def fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
        factory = BACKENDS[contract][request.param]
        return Backend(request.param, lambda: factory(tmp_path / "state"))

    return fixture


job_backend = _backend("jobs")
transfer_backend = _backend("transfers")
evaluation_backend = _backend("evaluations")
probe_backend = _backend("probes")
audit_backend = _backend("audit")
vault_backend = _backend("vault")


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
def audit_trail(audit_backend: Backend):
    trail = audit_backend.make()
    yield trail
    trail.close()
