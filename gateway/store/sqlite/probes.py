"""Probe outcomes per center, beside the jobs (the same database file).

Every time the gateway asks a center something on its own behalf (a load
query, a health probe) the outcome is kept here; a center's availability is
the share of them it answered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.store.sqlite.jobs import SQLiteFile
from gateway.units import utcnow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS probes (
    center TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    latency_ms REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS probes_center_at ON probes (center, at);
"""
#: Outcomes older than this are deleted as new ones arrive.
KEEP = timedelta(days=30)


@dataclass(frozen=True)
class ProbeStats:
    probes: int
    successes: int
    last_probe_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None

    @property
    def ratio(self) -> float | None:
        return self.successes / self.probes if self.probes else None


class SQLiteProbeStore(SQLiteFile):
    def _prepare(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)

    async def record(
        self, center: str, kind: str, ok: bool, latency_ms: float | None, error: str | None
    ) -> None:
        now = utcnow()

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO probes (center, kind, at, ok, latency_ms, error) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (center, kind, now.isoformat(), int(ok), latency_ms, error),
            )
            db.execute("DELETE FROM probes WHERE at < ?", ((now - KEEP).isoformat(),))

        await self._call(write)

    async def stats(self, center: str, since: datetime) -> ProbeStats:
        def read(db: sqlite3.Connection) -> ProbeStats:
            row = db.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(ok), 0) AS good, MAX(at) AS last, "
                "MAX(CASE WHEN ok THEN at END) AS last_good "
                "FROM probes WHERE center = ? AND at >= ?",
                (center, since.isoformat()),
            ).fetchone()
            error = db.execute(
                "SELECT error FROM probes WHERE center = ? AND NOT ok ORDER BY at DESC LIMIT 1",
                (center,),
            ).fetchone()
            return ProbeStats(
                probes=row["n"],
                successes=row["good"],
                last_probe_at=datetime.fromisoformat(row["last"]) if row["last"] else None,
                last_success_at=(
                    datetime.fromisoformat(row["last_good"]) if row["last_good"] else None
                ),
                last_error=error["error"] if error else None,
            )

        return await self._call(read)

    async def window(self, center: str, kinds: Sequence[str], since: datetime) -> ProbeWindow:
        """The outcomes of `kinds` since `since`: counts, latencies, the latest errors."""
        marks = ", ".join("?" for _ in kinds)

        def read(db: sqlite3.Connection) -> ProbeWindow:
            where = f"center = ? AND kind IN ({marks}) AND at >= ?"
            args = (center, *kinds, since.isoformat())
            row = db.execute(
                f"SELECT COUNT(*) AS n, COALESCE(SUM(1 - ok), 0) AS bad FROM probes WHERE {where}",  # noqa: S608
                args,
            ).fetchone()
            latencies = [
                r[0]
                for r in db.execute(
                    f"SELECT latency_ms FROM probes WHERE {where} AND ok "  # noqa: S608
                    "AND kind = 'ssh' AND latency_ms IS NOT NULL",
                    args,
                ).fetchall()
            ]
            errors = [
                ProbeError(datetime.fromisoformat(r["at"]), r["kind"], r["error"] or "")
                for r in db.execute(
                    f"SELECT at, kind, error FROM probes WHERE center = ? AND kind IN ({marks}) "  # noqa: S608
                    "AND NOT ok ORDER BY at DESC, rowid DESC LIMIT ?",
                    (center, *kinds, RECENT_ERRORS),
                ).fetchall()
            ]
            return ProbeWindow(row["n"], row["bad"], sorted(latencies), errors)

        return await self._call(read)


#: How many failed probes a window lists.
RECENT_ERRORS = 5


@dataclass(frozen=True)
class ProbeError:
    at: datetime
    kind: str
    error: str


@dataclass(frozen=True)
class ProbeWindow:
    probes: int
    failures: int
    ssh_latencies_ms: list[float]  # of good ssh probes, ascending
    recent_errors: list[ProbeError]  # newest first

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
