"""What every store contract shares, whatever the backend: the life cycle of a
store, and its error. A failing call raises `StoreError` (or a named kind of it
that its contract lists) and writes nothing."""

from __future__ import annotations

import abc


class StoreError(Exception):
    """The store failed; nothing was written by the failing call."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (its server is down, or every connection is
    busy past the pool's timeout); the same call may succeed later. Nothing was
    written, unless the message says the outcome is unknown."""


class Store(abc.ABC):
    """A store serves between `open` and `close`."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, creating or upgrading what the store keeps where needed."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreError if the store cannot serve."""
