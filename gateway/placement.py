"""Choosing a center for `center: auto`.

For now: the configured default center, else the center with the fewest
active jobs of the gateway (ties broken by id, so the choice is stable); only
centers where the user has a login are candidates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from gateway.centers import CenterRegistry
from gateway.errors import ApiError
from gateway.models import JobRecord


def choose_center(registry: CenterRegistry, active_jobs: Iterable[JobRecord], user: str) -> str:
    candidates = [c for c in registry if c.serves(user)]
    if not candidates:
        raise ApiError(
            403,
            "no_identity_at_center",
            f"center: user {user} has no login at any center; ask a center to map them",
            field="center",
        )
    default = registry.find(registry.default) if registry.default else None
    if default is not None and default.serves(user):
        return default.id
    load = Counter(job.center for job in active_jobs)
    return min((load[c.id], c.id) for c in candidates)[1]
