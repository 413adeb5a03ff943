"""Probe outcomes per center: the records and the ProbeStore contract.

Every time the gateway asks a center something on its own behalf (a load
query, a health probe) the outcome is kept; a center's availability is the
share of them it answered, and its health looks at a recent window of them.

Errors: a failing call raises StoreError and writes nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.store.contract import Store, StoreError

__all__ = [
    "KEEP",
    "RECENT_ERRORS",
    "ProbeError",
    "ProbeStats",
    "ProbeStore",
    "ProbeWindow",
    "StoreError",
]

#: Outcomes older than this are deleted as new ones arrive.
KEEP = timedelta(days=30)
#: How many failed probes a window lists.
RECENT_ERRORS = 5


@dataclass(frozen=True)
class ProbeStats:
    """A center's outcomes of every kind since some time (availability)."""

    probes: int
    successes: int
    last_probe_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None  # of the latest failure, however old

    @property
    def ratio(self) -> float | None:
        return self.successes / self.probes if self.probes else None


@dataclass(frozen=True)
class ProbeError:
    at: datetime
    kind: str
    error: str


@dataclass(frozen=True)
class ProbeWindow:
    """A center's outcomes of some kinds since some time (health)."""

    probes: int
    failures: int
    ssh_latencies_ms: list[float]  # of good ssh probes, ascending
    recent_errors: list[ProbeError]  # newest first, at most RECENT_ERRORS, however old

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.probes if self.probes else None

    def ssh_percentile(self, share: float) -> float | None:
        """The nearest-rank percentile of the good SSH round trips (share in 0..1)."""
        values = self.ssh_latencies_ms
        if not values:
            return None
        rank = max(0, min(len(values) - 1, round(share * len(values) + 0.5) - 1))
        return round(values[rank], 3)


class ProbeStore(Store):
    @abc.abstractmethod
    async def record(
        self, center: str, kind: str, ok: bool, latency_ms: float | None, error: str | None
    ) -> None:
        """Keep one outcome, at the current time; outcomes older than KEEP may go."""

    @abc.abstractmethod
    async def stats(self, center: str, since: datetime) -> ProbeStats:
        """The center's outcomes of every kind at or after `since`."""

    @abc.abstractmethod
    async def window(self, center: str, kinds: Sequence[str], since: datetime) -> ProbeWindow:
        """The outcomes of `kinds` at or after `since`: counts, good SSH latencies, and
        the latest errors of those kinds."""
