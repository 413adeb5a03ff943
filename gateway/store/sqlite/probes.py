"""Probe outcomes in SQLite, beside the jobs (the same database file)."""

from __future__ import annotations

import sqlite3
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
from gateway.store.sqlite.file import SQLiteFile
from gateway.units import utcnow


class SQLiteProbeStore(SQLiteFile, ProbeStore):
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
