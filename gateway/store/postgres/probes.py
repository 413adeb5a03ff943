"""Probe outcomes in PostgreSQL, beside the jobs (the same database)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from gateway.centers.probes import (
    KEEP,
    RECENT_ERRORS,
    ProbeError,
    ProbeStats,
    ProbeStore,
    ProbeWindow,
)
from gateway.store.postgres.pool import OnPool
from gateway.units import utcnow

_STATS = (
    "SELECT count(*), count(*) FILTER (WHERE ok), max(at), max(at) FILTER (WHERE ok) "
    "FROM probes WHERE center = %s AND at >= %s"
)
_LAST_ERROR = (
    "SELECT error FROM probes WHERE center = %s AND NOT ok ORDER BY at DESC, id DESC LIMIT 1"
)
_WINDOW = (
    "SELECT count(*), count(*) FILTER (WHERE NOT ok), "
    "coalesce(array_agg(latency_ms ORDER BY latency_ms) FILTER "
    "(WHERE ok AND kind = 'ssh' AND latency_ms IS NOT NULL), '{}') "
    "FROM probes WHERE center = %s AND kind = ANY(%s) AND at >= %s"
)
_ERRORS = (
    "SELECT at, kind, error FROM probes WHERE center = %s AND kind = ANY(%s) AND NOT ok "
    "ORDER BY at DESC, id DESC LIMIT %s"
)


def _text(value: str | None) -> str | None:
    # PostgreSQL text holds no NUL; an error message with one keeps the rest.
    return value.replace("\0", "\ufffd") if value is not None else None


class PgProbeStore(OnPool, ProbeStore):
    async def record(
        self, center: str, kind: str, ok: bool, latency_ms: float | None, error: str | None
    ) -> None:
        now = utcnow()
        async with self.pool.transaction() as conn:
            await conn.execute(
                "INSERT INTO probes (center, kind, at, ok, latency_ms, error) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (center, kind, now, ok, latency_ms, _text(error)),
            )
            await conn.execute("DELETE FROM probes WHERE at < %s", (now - KEEP,))

    async def stats(self, center: str, since: datetime) -> ProbeStats:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_STATS, (center, since))
            row = await cur.fetchone()
            cur = await conn.execute(_LAST_ERROR, (center,))
            error = await cur.fetchone()
        assert row is not None
        n, good, last, last_good = row
        return ProbeStats(
            probes=n,
            successes=good,
            last_probe_at=last,
            last_success_at=last_good,
            last_error=error[0] if error else None,
        )

    async def window(self, center: str, kinds: Sequence[str], since: datetime) -> ProbeWindow:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_WINDOW, (center, list(kinds), since))
            row = await cur.fetchone()
            cur = await conn.execute(_ERRORS, (center, list(kinds), RECENT_ERRORS))
            errors = [ProbeError(at, kind, error or "") for at, kind, error in await cur.fetchall()]
        assert row is not None
        n, bad, latencies = row
        return ProbeWindow(n, bad, list(latencies), errors)
