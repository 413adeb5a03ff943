"""One piece of background work claimed by this replica: a lease held while it runs.

A transfer (`transfer/<id>`) or a center's evaluation (`evaluation/<center>`) runs
at the replica holding its lease (gateway/store/leases.py). `Held` renews the
lease every `ttl / 3` seconds while the work runs and tells when it is lost: the
store gave it to another replica (this one stalled past its ttl), or it could not
be renewed before it ran out here. A store out of reach for a while is not a loss
while the lease still runs: its renewal is tried again every second meanwhile.
The local deadline is `ttl` after the last renewal was asked for, so it never
outlasts the store's own expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.store.contract import StoreError
from gateway.store.leases import Lease, Leases

log = logging.getLogger("hpcfed.claims")

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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
