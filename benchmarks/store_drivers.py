"""The PostgreSQL driver the stores use, chosen by measurement: asyncpg against
psycopg 3 (async), the same workload on the same server.

Run from the repository root (as root, like the testbed)::

    .venv/bin/python -m benchmarks.store_drivers [--quick]

On a fresh database of the testbed's PostgreSQL with the gateway's schema (the
PostgreSQL store's migrations), each driver on one connection of its own, one
operation after the other (N = 2,000 each, `--quick`: 300), after a warm-up:

- insert: one job-sized row into `jobs` (the store's INSERT: a record with a spec of
  about 1 KiB, its JSON documents cast to jsonb);
- point read: one record by primary key, built as JSON text by the server (the
  store's GET);
- page read: the newest 100 records (the store's page of a list).

Also the point read from 8 tasks on 8 connections at once (throughput under
concurrency). Printed: ops/s and the median latency of each, the drivers side by
side; psycopg 3 is the baseline of each row. The database is dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
from psycopg.conninfo import conninfo_to_dict

from benchmarks.harness import Context, Figure, bench_main
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord
from gateway.store.postgres import job_rows
from gateway.store.postgres.pool import PgPool
from gateway.store.postgres.schema import PgMigrator
from tests.contract.records import job
from tests.testbed import postgres

BENCH = "store drivers"
CONCURRENCY = 8
WARM_UP = 50
#: About the size of a submitted job's script.
SCRIPT = "#!/bin/bash\n" + "".join(f"echo step {n} >> out.log\n" for n in range(40))


def _asyncpg_sql(statement: str, count: int) -> str:
    """psycopg's %s placeholders as asyncpg's $n."""
    for n in range(1, count + 1):
        statement = statement.replace("%s", f"${n}", 1)
    return statement


_INSERT_COLUMNS = job_rows.COLUMNS
_INSERT_PG = (
    f"INSERT INTO jobs ({', '.join(_INSERT_COLUMNS)}) VALUES ("  # noqa: S608
    + ", ".join("%s::jsonb" if c in job_rows.JSON_COLUMNS else "%s" for c in _INSERT_COLUMNS)
    + ")"
)
_INSERT_APG = _asyncpg_sql(_INSERT_PG, len(_INSERT_COLUMNS))
_GET_PG = job_rows.GET
_GET_APG = _asyncpg_sql(job_rows.GET, 1)
_PAGE = f"SELECT {job_rows.RECORD} FROM jobs ORDER BY created_at DESC, id DESC LIMIT 100"  # noqa: S608


def _row() -> tuple[Any, ...]:
    record = job(spec=JobSpec(script=SCRIPT, environment={"OMP_NUM_THREADS": "4"}))
    row = job_rows.to_row(record)
    return tuple(row[c] for c in _INSERT_COLUMNS)


class Driver:
    name: str

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def insert(self, row: tuple[Any, ...]) -> None: ...
    async def get(self, job_id: str) -> str: ...
    async def page(self) -> list[str]: ...


class Psycopg(Driver):
    name = "psycopg 3"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def connect(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        await self.conn.execute("SET TIME ZONE 'UTC'")

    async def close(self) -> None:
        assert self.conn is not None
        await self.conn.close()

    async def insert(self, row: tuple[Any, ...]) -> None:
        assert self.conn is not None
        await self.conn.execute(_INSERT_PG, row)

    async def get(self, job_id: str) -> str:
        assert self.conn is not None
        cur = await self.conn.execute(_GET_PG, (job_id,))
        found = await cur.fetchone()
        assert found is not None
        return str(found[0])

    async def page(self) -> list[str]:
        assert self.conn is not None
        cur = await self.conn.execute(_PAGE)
        return [r[0] for r in await cur.fetchall()]


class Asyncpg(Driver):
    name = "asyncpg"

    def __init__(self, dsn: str) -> None:
        self.params = conninfo_to_dict(dsn)
        self.conn: asyncpg.Connection | None = None

    async def connect(self) -> None:
        p = self.params
        self.conn = await asyncpg.connect(
            host=p.get("host"),
            port=int(p.get("port", 5432)),
            user=p.get("user"),
            database=p.get("dbname"),
            server_settings={"TimeZone": "UTC"},
        )

    async def close(self) -> None:
        assert self.conn is not None
        await self.conn.close()

    async def insert(self, row: tuple[Any, ...]) -> None:
        assert self.conn is not None
        await self.conn.execute(_INSERT_APG, *row)

    async def get(self, job_id: str) -> str:
        assert self.conn is not None
        return str(await self.conn.fetchval(_GET_APG, job_id))

    async def page(self) -> list[str]:
        assert self.conn is not None
        return [r[0] for r in await self.conn.fetch(_PAGE)]


async def _timed(n: int, op: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """(ops/s, median seconds) of op(0) ... op(n - 1), one after the other, after a
    warm-up of op(n) ... op(n + WARM_UP - 1) (connections, prepared statements)."""
    for i in range(n, n + WARM_UP):
        await op(i)
    times = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        await op(i)
        times.append(time.perf_counter() - t0)
    return n / (time.perf_counter() - start), statistics.median(times)


async def _concurrent(drivers: list[Driver], n: int, ids: list[str]) -> tuple[float, float]:
    """(ops/s, median seconds) of `n` point reads shared by the drivers' connections."""
    times: list[float] = []

    async def worker(d: Driver, k: int) -> None:
        for i in range(k, n, len(drivers)):
            t0 = time.perf_counter()
            await d.get(ids[i % len(ids)])
            times.append(time.perf_counter() - t0)

    await asyncio.gather(*(d.get(ids[0]) for d in drivers))  # warm-up
    start = time.perf_counter()
    await asyncio.gather(*(worker(d, k) for k, d in enumerate(drivers)))
    return n / (time.perf_counter() - start), statistics.median(times)


async def measure(dsn: str, n: int) -> dict[str, dict[str, tuple[float, float]]]:
    """driver -> workload -> (ops/s, median seconds)."""
    pool = PgPool(dsn, min_size=1, max_size=1)
    await pool.open()
    try:
        await PgMigrator(pool).migrate()
    finally:
        await pool.close()
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for make in (Psycopg, Asyncpg):
        figures = await _one(make(dsn), n)
        many: list[Driver] = [make(dsn) for _ in range(CONCURRENCY)]
        for d in many:
            await d.connect()
        try:
            ids = [str(r[0]) for r in await _rows(many[0])]
            figures[f"point read, {CONCURRENCY} connections"] = await _concurrent(many, n, ids)
        finally:
            for d in many:
                await d.close()
        out[many[0].name] = figures
    return out


async def _rows(driver: Driver) -> list[tuple[str]]:
    return [(JobRecord.model_validate_json(t).id,) for t in await driver.page()]


async def _one(driver: Driver, n: int) -> dict[str, tuple[float, float]]:
    await driver.connect()
    rows = [_row() for _ in range(n + WARM_UP)]
    ids = [str(r[0]) for r in rows]
    try:
        return {
            "insert": await _timed(n, lambda i: driver.insert(rows[i])),
            "point read": await _timed(n, lambda i: driver.get(ids[i % len(ids)])),
            "page read (100)": await _timed(max(n // 10, 20), lambda i: driver.page()),
        }
    finally:
        await driver.close()


def table(results: dict[str, dict[str, tuple[float, float]]]) -> str:
    names = list(results)
    workloads = list(results[names[0]])
    head = f"{'workload':28}" + "".join(f"{n + ' ops/s':>18}{n + ' p50 ms':>18}" for n in names)
    lines = [head]
    for w in workloads:
        cells = "".join(
            f"{results[n][w][0]:>18,.0f}{results[n][w][1] * 1000:>18.3f}" for n in names
        )
        lines.append(f"{w:28}{cells}")
    return "\n".join(lines)


async def run(ctx: Context) -> list[Figure]:
    n = 300 if ctx.quick else 2000
    # Both drivers find the role's password where libpq does.
    os.environ["PGPASSFILE"] = str(postgres.pgpass_file(ctx.tb.base))
    name = f"bench_drivers_{secrets.token_hex(4)}"
    dsn = await asyncio.to_thread(postgres.create_database, ctx.tb.base, name)
    try:
        results = await measure(dsn, n)
    finally:
        await asyncio.to_thread(postgres.drop_database, ctx.tb.base, name)
    print(table(results), file=sys.stderr)
    base = results["psycopg 3"]
    return [
        Figure(
            bench=BENCH,
            name=f"{workload} (asyncpg)",
            value=ops,
            unit="ops/s",
            baseline=base[workload][0],
            baseline_name="psycopg 3",
            note=f"p50 {p50 * 1000:.3f} ms vs {base[workload][1] * 1000:.3f} ms",
        )
        for workload, (ops, p50) in results["asyncpg"].items()
    ]


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.store_drivers", run, argv)


if __name__ == "__main__":
    sys.exit(main())
