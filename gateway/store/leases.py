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

`Held` keeps a lease while a piece of work runs: renewed every `ttl / 3` seconds in
a task of its own, and it tells when the lease is lost (the store gave it to another
replica because this one stalled past its ttl, or it could not be renewed before it
ran out here). A store out of reach for a while is no loss while the lease still
runs: the renewal is tried again every second meanwhile. The local deadline is `ttl`
after the last renewal was asked for, so it never outlasts the store's own expiry.
`claim` and `claim_many` hold leases so for the length of a block.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from gateway.store.contract import Store, StoreError
from gateway.store.outages import every, stop

__all__ = [
    "Held",
    "Lease",
    "LeaseLost",
    "LeasedWork",
    "Leases",
    "LocalLeases",
    "acquire",
    "claim",
    "claim_many",
    "release_quietly",
    "replica_id",
]

log = logging.getLogger("hpcfed.leases")


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
    #: False where one process holds every lease it asks for (nobody else could take
    #: one): what holds leases for good may then take them once and stop renewing.
    shared: bool = True

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

    async def acquire_many(self, names: Sequence[str], ttl: float) -> dict[str, Lease]:
        """`acquire` of each name, together where the store can (one statement for a
        batch of jobs rather than one each): those this replica holds now, by name."""
        got = await asyncio.gather(*(self.acquire(n, ttl) for n in names))
        return {lease.name: lease for lease in got if lease is not None}

    async def release_many(self, leases: Sequence[Lease]) -> None:
        """`release` of each lease, together where the store can."""
        for lease in leases:
            await self.release(lease)


class LocalLeases(Leases):
    """Leases in this process's memory: the embedded store's, with one process."""

    shared = False

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


#: Seconds between two tries to renew a lease while the store does not answer.
RENEW_RETRY = 1.0


class Held:
    """`lease`, acquired `asked` (monotonic) for `ttl` seconds, renewed in a task of its
    own from `start()` until `release()`; `on_lost` is called once if it is lost."""

    def __init__(
        self,
        leases: Leases,
        lease: Lease,
        ttl: float,
        *,
        asked: float | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.leases = leases
        self.lease = lease
        self.ttl = ttl
        self.on_lost = on_lost
        self.lost = False
        self._until = (time.monotonic() if asked is None else asked) + ttl
        self._task: asyncio.Task[None] | None = None

    @property
    def holding(self) -> bool:
        """Still held as far as this replica can tell."""
        return not self.lost and time.monotonic() < self._until

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew(), name=f"lease-{self.lease.name}")

    async def _renew(self) -> None:
        wait = self.ttl / 3
        failing = False
        while True:
            await asyncio.sleep(wait)
            asked = time.monotonic()
            try:
                lease = await self.leases.acquire(self.lease.name, self.ttl)
            except StoreError as exc:
                if not failing:
                    log.warning("lease %s not renewed, trying again: %s", self.lease.name, exc)
                failing = True
                if time.monotonic() >= self._until:
                    self._lose("it ran out while the store could not be reached")
                    return
                wait = min(RENEW_RETRY, self.ttl / 3)
                continue
            if lease is None or lease.fence != self.lease.fence:
                self._lose("another replica holds it now")
                return
            if failing:
                log.info("lease %s renewed again", self.lease.name)
            failing, wait = False, self.ttl / 3
            self.lease, self._until = lease, asked + self.ttl

    def _lose(self, why: str) -> None:
        log.warning("lease %s lost: %s", self.lease.name, why)
        self.lost = True
        if self.on_lost is not None:
            self.on_lost()

    async def release(self) -> None:
        """Stop renewing; give the lease up unless it was lost (a failing store leaves
        it to run out)."""
        await stop(self._task)
        self._task = None
        if not self.lost:
            try:
                await self.leases.release(self.lease)
            except StoreError as exc:
                log.warning("lease %s not released (it runs out): %s", self.lease.name, exc)


async def acquire(leases: Leases, name: str, ttl: float) -> tuple[Lease | None, float]:
    """The lease `name` if this replica may hold it (None: another does), and the
    monotonic time it was asked for (what `Held` counts its ttl from)."""
    asked = time.monotonic()
    return await leases.acquire(name, ttl), asked


class LeasedWork:
    """What a service whose work each replica takes up by lease keeps (transfers,
    evaluations): the leases (in memory, every one this process's, by default), how
    long one lasts, and a sweep every `sweep_every` seconds for work whose lease is free."""

    def __init__(self, leases: Leases | None, lease_ttl: float, sweep_every: float) -> None:
        self.leases = leases if leases is not None else LocalLeases()
        self.lease_ttl = lease_ttl
        self.sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    def start_sweep(
        self, work: Callable[[], Awaitable[object]], what: str, logger: logging.Logger, name: str
    ) -> None:
        """`work()` every `sweep_every` seconds (`outages.every`) in the task `name`."""
        self._sweeper = asyncio.create_task(every(self.sweep_every, work, what, logger), name=name)

    async def stop_sweep(self) -> None:
        """The service is closing: the sweep ends."""
        self._closing = True
        await stop(self._sweeper)
        self._sweeper = None


async def release_quietly(leases: Leases, lease: Lease) -> None:
    """Give `lease` up; a store that fails leaves it to run out."""
    with contextlib.suppress(StoreError):
        await leases.release(lease)


@contextlib.asynccontextmanager
async def claim(
    leases: Leases, name: str, ttl: float, lease: Lease | None = None
) -> AsyncIterator[Lease | None]:
    """Hold the lease `name` while the block runs (`Held`), released at its end; yields
    None (and holds nothing) while another replica holds it. `lease`: one already
    acquired for it, which the block takes over."""
    async with claim_many(leases, [name], ttl, [lease] if lease else ()) as held:
        yield held.get(name)


@contextlib.asynccontextmanager
async def claim_many(
    leases: Leases, names: Iterable[str], ttl: float, acquired: Iterable[Lease] = ()
) -> AsyncIterator[dict[str, Lease]]:
    """`claim` of several leases at once: yields those this replica holds, by name (the
    others are held by other replicas), renewed together (`acquire_many`, one statement
    for the lot) every ttl / 3 while the block runs, released together at its end. A
    lease that another replica took meanwhile is logged and left to it."""
    taken = {lease.name: lease for lease in acquired}
    wanted = [n for n in names if n not in taken]
    if wanted:
        taken.update(await leases.acquire_many(wanted, ttl))

    async def renew() -> None:
        wait = ttl / 3
        while True:
            await asyncio.sleep(wait)
            try:
                now = await leases.acquire_many(sorted(taken), ttl)
            except StoreError as exc:
                log.warning("%d leases not renewed, trying again: %s", len(taken), exc)
                wait = min(RENEW_RETRY, ttl / 3)
                continue
            wait = ttl / 3
            for name in [
                n for n, lease in taken.items() if n not in now or now[n].fence != lease.fence
            ]:
                log.warning("lease %s lost: another replica holds it now", name)
                del taken[name]

    task = asyncio.create_task(renew(), name="claims") if taken else None
    try:
        yield taken
    finally:
        await stop(task)
        try:
            await leases.release_many(list(taken.values()))
        except StoreError as exc:
            log.warning("%d leases not released (they run out): %s", len(taken), exc)
