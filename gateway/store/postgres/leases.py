"""Leases in PostgreSQL (gateway/store/leases.py): one row per lease, shared by every
replica of the database.

A lease is taken, renewed or refused in one statement (an upsert whose update
applies only to an expired row or one of the same holder), so two replicas asking
at once cannot both get it. Every time is the database's clock (`now()`), never a
replica's. Fences come from a sequence: a lease that changes hands, or is taken
again after it was released or expired, gets a value never used before; a
renewal keeps its fence. Rows of leases long expired are deleted now and then.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store.leases import Lease, Leases, replica_id
from gateway.store.postgres.pool import OnPool, PgPool

#: Migration 2 of gateway/store/postgres/schema.py.
LEASES_SQL = """
CREATE SEQUENCE lease_fences;
CREATE TABLE leases (
    name text COLLATE "C" PRIMARY KEY,
    holder text NOT NULL,
    fence bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
"""

#: A lease taken over once it has expired, or renewed by its holder (its fence kept
#: while it has not expired).
_TAKE_OVER = """
ON CONFLICT (name) DO UPDATE SET
    holder = EXCLUDED.holder,
    fence = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now()
                 THEN l.fence ELSE EXCLUDED.fence END,
    expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder
"""
_ACQUIRE = f"""
INSERT INTO leases AS l (name, holder, fence, expires_at)
VALUES (%(name)s, %(holder)s, nextval('lease_fences'), now() + make_interval(secs => %(ttl)s))
{_TAKE_OVER}
RETURNING l.fence, extract(epoch FROM l.expires_at)::float8
"""  # noqa: S608 (fixed text)
#: `_ACQUIRE` of many names in one statement; in name order, so that two replicas
#: asking for overlapping sets lock their rows in one order and never deadlock.
_ACQUIRE_MANY = f"""
INSERT INTO leases AS l (name, holder, fence, expires_at)
SELECT n, %(holder)s, nextval('lease_fences'), now() + make_interval(secs => %(ttl)s)
FROM unnest(%(names)s::text[]) AS n ORDER BY n
{_TAKE_OVER}
RETURNING l.name, l.fence, extract(epoch FROM l.expires_at)::float8
"""  # noqa: S608 (fixed text)
_RELEASE = "DELETE FROM leases WHERE name = %s AND holder = %s AND fence = %s"
_RELEASE_MANY = """
DELETE FROM leases WHERE holder = %s
AND (name, fence) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))
"""
_HOLDERS = (
    "SELECT name, holder, fence, extract(epoch FROM expires_at)::float8 FROM leases "
    "WHERE starts_with(name, %s) AND expires_at > now()"
)
#: Rows of leases expired this long ago go (a dead replica's, never released).
_SWEEP = "DELETE FROM leases WHERE expires_at < now() - interval '1 hour'"
#: One acquire in this many also sweeps.
SWEEP_EVERY = 1000


class PgLeases(OnPool, Leases):
    def __init__(self, pool: PgPool, holder: str | None = None) -> None:
        super().__init__(pool)
        self.holder = holder or replica_id()
        self._acquired = 0

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        self._acquired += 1
        async with self.pool.connection() as conn:
            if self._acquired % SWEEP_EVERY == 0:
                await conn.execute(_SWEEP)
            cur = await conn.execute(
                _ACQUIRE, {"name": name, "holder": self.holder, "ttl": float(ttl)}
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return Lease(name, self.holder, int(row[0]), float(row[1]))

    async def acquire_many(self, names: Sequence[str], ttl: float) -> dict[str, Lease]:
        if not names:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _ACQUIRE_MANY,
                {"names": sorted(set(names)), "holder": self.holder, "ttl": float(ttl)},
            )
            rows = await cur.fetchall()
        return {n: Lease(n, self.holder, int(f), float(e)) for n, f, e in rows}

    async def release_many(self, leases: Sequence[Lease]) -> None:
        mine = [lease for lease in leases if lease.holder == self.holder]
        if not mine:
            return
        async with self.pool.connection() as conn:
            await conn.execute(
                _RELEASE_MANY,
                (self.holder, [lease.name for lease in mine], [lease.fence for lease in mine]),
            )

    async def release(self, lease: Lease) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_RELEASE, (lease.name, lease.holder, lease.fence))

    async def holders(self, prefix: str) -> dict[str, Lease]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_HOLDERS, (prefix,))
            rows = await cur.fetchall()
        return {n: Lease(n, h, int(f), float(e)) for n, h, f, e in rows}
