"""Choosing a center for `center: auto`.

For now: the configured default center, else the center with the fewest
active jobs of the gateway (ties broken by id, so the choice is stable).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from gateway.centers import CenterRegistry
from gateway.models import JobRecord


def choose_center(registry: CenterRegistry, active_jobs: Iterable[JobRecord]) -> str:
    if registry.default:
        return registry.default
    load = Counter(job.center for job in active_jobs)
    return min((load[c.id], c.id) for c in registry)[1]
