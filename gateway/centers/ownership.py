"""Which centers this replica polls and probes: the leases `center/<id>`.

Replicas that share one store each try to hold every center's lease; the store
gives each to one of them at a time (gateway/store/leases.py). The holder polls
the center's jobs and probes it; the others leave it alone and read what the
holder recorded (job records, probe outcomes). With the embedded store, whose
leases are all this process's, every center is owned, as with one gateway.

Leases are renewed every `ttl / 3` seconds. A lease is taken as held until
`ttl` after the renewal was asked for (a local clock, started before the store
was asked, so never later than the store's own expiry). A replica that dies
keeps its centers until their leases expire: at most `ttl` after its last
renewal. A survivor asks every `ttl / 3`, so it holds them at most `ttl + ttl / 3`
after the death (6.7 s with the default ttl of 5 s) and its poller is woken at
once; the first poll follows within one poll's duration.

`claim` (gateway/store/leases.py) is the same for one piece of work done once
(sending a job, collecting its outputs): held, and renewed, while the work runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from gateway.store.contract import StoreError
from gateway.store.leases import Lease, Leases, release_quietly
from gateway.store.outages import stop

log = logging.getLogger("hpcfed.ownership")

#: The default lease ttl (seconds), as the config's `lease_ttl`.
DEFAULT_TTL = 5.0


def center_lease(center_id: str) -> str:
    return f"center/{center_id}"


class CenterOwnership:
    """The `center/<id>` leases this replica holds, renewed in the background."""

    def __init__(self, leases: Leases, centers: Iterable[str], ttl: float = DEFAULT_TTL) -> None:
        self.leases = leases
        self.centers = list(centers)
        self.ttl = ttl
        #: Center id -> (lease, monotonic time until which it is taken as held).
        self._held: dict[str, tuple[Lease, float]] = {}
        #: Told of each center this replica comes to own (e.g. the poller's wake).
        self.on_gained: list[Callable[[str], None]] = []
        self._task: asyncio.Task[None] | None = None

    def lease(self, center_id: str) -> Lease | None:
        """This replica's lease of the center while it holds it, else None."""
        held = self._held.get(center_id)
        if held is None or (self.leases.shared and held[1] <= time.monotonic()):
            return None
        return held[0]

    def owns(self, center_id: str) -> bool:
        return self.lease(center_id) is not None

    def lost(self, center_id: str, lease: Lease) -> None:
        """A write under `lease` was refused: it moved on; forget it until renewed."""
        held = self._held.get(center_id)
        if held is not None and held[0].fence == lease.fence:
            del self._held[center_id]

    async def renew(self, *, notify: bool = True) -> None:
        """Acquire (or renew) every center's lease once; `notify`: tell `on_gained` of
        each center newly owned."""
        await asyncio.gather(*(self._renew(c, notify) for c in self.centers))

    async def _renew(self, center_id: str, notify: bool = True) -> None:
        asked = time.monotonic()
        before = self.lease(center_id)
        try:
            lease = await self.leases.acquire(center_lease(center_id), self.ttl)
        except StoreError as exc:
            log.warning("center %s: lease not renewed: %s", center_id, exc)
            return  # kept until it runs out locally
        if lease is None:
            if before is not None:
                log.warning("center %s: its lease moved to another replica", center_id)
            self._held.pop(center_id, None)
            return
        self._held[center_id] = (lease, asked + self.ttl)
        if before is None or before.fence != lease.fence:
            log.info(
                "center %s: owned by this replica (%s, fence %d)",
                center_id,
                lease.holder,
                lease.fence,
            )
            for told in self.on_gained if notify else ():
                told(center_id)

    async def start(self) -> None:
        """Take the leases; where nobody else could take them (leases not shared: one
        process), they are held for good, with nothing renewed and nothing woken later.
        Nobody is told of the centers taken here: what starts after (the poller) asks
        about every owned center at once anyway."""
        await self.renew(notify=False)
        if not self.leases.shared:
            return
        self._task = asyncio.create_task(self.run(), name="ownership")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.renew()
            except Exception:
                log.exception("lease renewal failed")

    async def close(self) -> None:
        """Stop renewing and give every lease up, so another replica takes over now."""
        await stop(self._task)
        self._task = None
        for lease, _ in list(self._held.values()):
            await release_quietly(self.leases, lease)
        self._held.clear()
