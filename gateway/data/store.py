"""The TransferStore contract: transfer records, as the transfer service keeps them.

Errors: a failing call raises StoreError and writes nothing.
"""

from __future__ import annotations

import abc

from gateway.data.models import TransferRecord
from gateway.store.contract import Store, StoreError

__all__ = ["StoreError", "TransferStore"]


class TransferStore(Store):
    @abc.abstractmethod
    async def save(self, record: TransferRecord) -> TransferRecord:
        """Store the record durably, new or replacing the one of its id, with
        `updated_at` set to now (on the record given, which is returned)."""

    @abc.abstractmethod
    async def get(self, transfer_id: str) -> TransferRecord | None: ...

    @abc.abstractmethod
    async def list(self, owner: str | None, limit: int = 100) -> list[TransferRecord]:
        """Newest first, at most `limit`; `owner=None` lists every owner's transfers."""

    @abc.abstractmethod
    async def unfinished(self) -> list[TransferRecord]:
        """Every transfer not in a terminal state, oldest first: what a start takes up."""
