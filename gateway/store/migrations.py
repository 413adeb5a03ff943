"""Versioned schema migrations, the same rules for every backend.

Each backend lists its migrations in order (`Migration`: version 1, 2, 3 ...,
never renumbered, never edited once released) and records the versions applied
in a table of its database (`schema_migrations`). A gateway applies what the
database lacks when it starts (`store.migrate: auto`), or leaves that to
`hpcfed db migrate` (`manual`) and refuses to start until it has run. A gateway
never starts against a schema newer than it knows: an older replica met by a
rolling upgrade stops with `SchemaTooNew` rather than writing rows it does not
understand (docs/deployment.md, "Rolling upgrades").
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.store.contract import StoreError

__all__ = [
    "AppliedMigration",
    "Migration",
    "Migrator",
    "SchemaBehind",
    "SchemaStatus",
    "SchemaTooNew",
    "check_order",
]


@dataclass(frozen=True)
class Migration:
    """One step of a backend's schema; `sql` runs in one transaction with the
    record of it."""

    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    applied_at: datetime


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands against what this gateway knows."""

    backend: str
    known: int  # the newest version this gateway has
    applied: list[AppliedMigration] = field(default_factory=list)
    pending: list[Migration] = field(default_factory=list)

    @property
    def current(self) -> int:
        """The newest version applied; 0 for an empty database."""
        return max((m.version for m in self.applied), default=0)

    @property
    def too_new(self) -> bool:
        return self.current > self.known


class SchemaTooNew(StoreError):
    """The database's schema is newer than this gateway knows."""

    def __init__(self, status: SchemaStatus) -> None:
        super().__init__(
            f"the {status.backend} schema is at version {status.current}, newer than this "
            f"gateway knows ({status.known}); run a gateway of the release that migrated it"
        )
        self.status = status


class SchemaBehind(StoreError):
    """`store.migrate: manual` and the database lacks migrations."""

    def __init__(self, status: SchemaStatus) -> None:
        names = ", ".join(f"{m.version} {m.name}" for m in status.pending)
        super().__init__(
            f"the {status.backend} schema is at version {status.current} and lacks {names}; "
            "run `hpcfed db migrate` (store.migrate is manual)"
        )
        self.status = status


def check_order(migrations: Sequence[Migration]) -> None:
    """A backend's list must number its steps 1, 2, 3 ... (a programming error if not)."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, not {versions}")


def pending(
    migrations: Sequence[Migration], applied: Sequence[AppliedMigration]
) -> list[Migration]:
    done = {m.version for m in applied}
    return [m for m in migrations if m.version not in done]


class Migrator(abc.ABC):
    """A backend's schema: where it stands, and bringing it up to date. Both are safe
    to call from several processes at once (the backend serialises migrations)."""

    @abc.abstractmethod
    async def status(self) -> SchemaStatus: ...

    @abc.abstractmethod
    async def migrate(self) -> SchemaStatus:
        """Apply every pending migration in order; SchemaTooNew if the schema is newer
        than this gateway knows. Returns the status after."""

    async def ensure(self, mode: str) -> SchemaStatus:
        """What a start does: `auto` migrates, `manual` raises SchemaBehind when
        something is pending; both raise SchemaTooNew."""
        status = await self.status()
        if status.too_new:
            raise SchemaTooNew(status)
        if status.pending:
            if mode != "auto":
                raise SchemaBehind(status)
            status = await self.migrate()
        return status
