"""The EvaluationStore contract: access evaluation records, per center.

Errors: a failing call raises StoreError and writes nothing.
"""

from __future__ import annotations

import abc

from gateway.centers.evaluation.models import EvaluationRecord
from gateway.store.contract import Store, StoreError

__all__ = ["EvaluationStore", "StoreError"]


class EvaluationStore(Store):
    @abc.abstractmethod
    async def save(self, record: EvaluationRecord) -> EvaluationRecord:
        """Store the record as it is now (new, or replacing the one of its id); later
        changes to the object are not stored until it is saved again."""

    @abc.abstractmethod
    async def get(self, evaluation_id: str) -> EvaluationRecord | None: ...

    @abc.abstractmethod
    async def list(self, center: str, limit: int = 100) -> list[EvaluationRecord]:
        """The center's evaluations, newest first, at most `limit`."""

    @abc.abstractmethod
    async def latest_finished(self, center: str) -> EvaluationRecord | None:
        """The newest evaluation of the center that ended (DONE or ERROR): what
        admission and the descriptor's measured figures look at."""

    @abc.abstractmethod
    async def running(self) -> list[EvaluationRecord]:
        """Every evaluation still RUNNING, oldest first (at start: left by a stopped run)."""
