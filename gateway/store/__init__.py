"""Job storage: the interface and its implementations."""

from gateway.store.base import JobPage, JobStore, StoreError
from gateway.store.sqlite import SQLiteJobStore

__all__ = ["JobPage", "JobStore", "SQLiteJobStore", "StoreError"]
