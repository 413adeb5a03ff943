"""The Leases contract: which replica does a piece of background work, for how long.

Several replicas share one store; each piece of background work that must run
once (polling and probing a center, sending a job, collecting a job's outputs,
running a transfer or an evaluation) is done by the replica holding its lease,
named like ``center/centera`` or ``transfer/<id>``. A lease lasts `ttl` seconds
from its last `acquire`; its holder renews it by acquiring it again before then.
One that is not renewed expires, and any replica may take it: a replica that
dies loses what it held within its leases' ttl.

Each time a lease changes hands its `fence` grows, so a write made on the
strength of a lease can be refused once the lease has moved on (a replica that
stalled past its ttl must not overwrite what the new holder wrote): the stores
that take a `lease` argument write only while it is still held with its fence,
and raise `LeaseLost` otherwise.

`LocalLeases` keeps them in memory, for the embedded store: one process holds
every lease it asks for. Backends shared by replicas keep them in their store.
Errors: a failing call raises StoreError and changes no lease.
"""

from __future__ import annotations

import abc
import os
import secrets
import socket
import time
from dataclasses import dataclass

from gateway.store.contract import Store, StoreError

__all__ = ["Lease", "LeaseLost", "Leases", "LocalLeases", "replica_id"]


def replica_id() -> str:
    """A name for this process among the replicas: host, pid and a random part (a
    restarted replica is a new holder, even with the same pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    fence: int  # grows each time the lease changes hands; never reused
    expires_at: float  # epoch seconds, as the store's clock saw it when acquired


class LeaseLost(StoreError):
    """A write made under a lease that is no longer held with that fence."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"lease {lease.name} (fence {lease.fence}) is no longer held")
        self.lease = lease


class Leases(Store):
    """The leases of the store, asked for on behalf of `holder` (this replica)."""

    holder: str

    @abc.abstractmethod
    async def acquire(self, name: str, ttl: float) -> Lease | None:
        """The lease `name` for `ttl` seconds from now if this replica may hold it: it
        was free or expired (taken: a new fence), or this replica holds it already
        (renewed: the same fence). None while another replica holds it."""

    @abc.abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give the lease up at once (if still held with its fence; else nothing)."""

    @abc.abstractmethod
    async def holders(self, prefix: str) -> dict[str, Lease]:
        """The unexpired leases whose names start with `prefix`, by name: who does what."""


class LocalLeases(Leases):
    """Leases in this process's memory: the embedded store's, with one process."""

    def __init__(self, holder: str | None = None) -> None:
        self.holder = holder or replica_id()
        self._leases: dict[str, Lease] = {}
        self._fence = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._leases.clear()

    async def ping(self) -> None:
        return None

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        now = time.time()
        current = self._leases.get(name)
        if current is not None and current.expires_at > now and current.holder != self.holder:
            return None
        if current is not None and current.holder == self.holder and current.expires_at > now:
            fence = current.fence
        else:
            self._fence += 1
            fence = self._fence
        lease = Lease(name, self.holder, fence, now + ttl)
        self._leases[name] = lease
        return lease

    async def release(self, lease: Lease) -> None:
        current = self._leases.get(lease.name)
        if current is not None and (current.holder, current.fence) == (lease.holder, lease.fence):
            del self._leases[lease.name]

    async def holders(self, prefix: str) -> dict[str, Lease]:
        now = time.time()
        return {
            n: lease
            for n, lease in self._leases.items()
            if n.startswith(prefix) and lease.expires_at > now
        }
