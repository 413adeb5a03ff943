"""The connections of one replica to PostgreSQL, shared by all its stores.

psycopg 3 with its connection pool: `store.pool` bounds how many connections a
replica holds and how long a call waits for one. Every failure leaves here as a
StoreError: `StoreUnavailable` when the server cannot be reached or no
connection frees up in time (the HTTP layer answers 503 `store_unavailable`),
a plain StoreError for anything else. Connections are checked before they are
handed out, so after the server restarts the first calls get fresh ones rather
than the dead ones. Messages name the server, never the password.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.store.contract import Store, StoreError, StoreUnavailable

log = logging.getLogger("hpcfed.store")

#: Shown in pg_stat_activity, so an operator can tell the gateway's connections.
APPLICATION_NAME = "hpcfed"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Every connection speaks UTC: times read back, and those the SQL turns into
    JSON, carry +00:00 whatever the server's TimeZone."""
    await conn.execute("SET TIME ZONE 'UTC'")


def connect(dsn: str, application_name: str = APPLICATION_NAME) -> psycopg.Connection[Any]:
    """A blocking autocommit connection, as the pool's (the audit trail and the
    vault's entries have blocking contracts). Raises StoreError."""
    try:
        conn = psycopg.connect(dsn, autocommit=True, application_name=application_name)
        conn.execute("SET TIME ZONE 'UTC'")
    except psycopg.Error as exc:
        raise store_error(exc) from exc
    return conn


def store_error(exc: psycopg.Error) -> StoreError:
    """The StoreError a psycopg error stands for."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(f"postgres unavailable: {_first_line(exc)}")
    return StoreError(f"postgres: {_first_line(exc)}")


class PgPool(Store):
    """A pool of autocommit connections; `connection()` lends one, `transaction()`
    lends one inside a transaction (committed when the block ends without error)."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 5.0,
        application_name: str = APPLICATION_NAME,
    ) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            check=AsyncConnectionPool.check_connection,
            configure=_configure,
            kwargs={"autocommit": True, "application_name": application_name},
            name="hpcfed",
        )

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=self.timeout)
        except PoolTimeout as exc:
            await self._pool.close()
            raise StoreUnavailable(
                f"postgres unavailable: no connection within {self.timeout:g}s"
            ) from exc
        except psycopg.Error as exc:
            await self._pool.close()
            raise store_error(exc) from exc

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreUnavailable(
                f"postgres unavailable: no connection free within {self.timeout:g}s"
            ) from exc
        except psycopg.Error as exc:
            raise store_error(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.execute("SELECT 1")

    @property
    def stats(self) -> dict[str, int]:
        """The pool's counters (psycopg_pool's names), for the metrics."""
        return dict(self._pool.get_stats())


class OnPool(Store):
    """A store kept in the replica's pool: open and close are the pool's (Stores opens
    it, and migrates the schema, before any of them), ping asks the server."""

    def __init__(self, pool: PgPool) -> None:
        self.pool = pool

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        await self.pool.ping()
