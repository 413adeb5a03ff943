"""Job records for the store tests: a plain one, and one with every field set."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from adapters.base import JobState
from gateway.jobs.models import JobSpec
from gateway.jobs.records import (
    ElementRecord,
    JobRecord,
    JobUsage,
    PlacementDecision,
    Price,
    StagedFile,
    Staging,
)
from gateway.units import utcnow


def job(**fields: object) -> JobRecord:
    now = utcnow()
    base: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "owner": "alice",
        "center": "local",
        "spec": JobSpec(command="true"),
        "state": JobState.SUBMITTING,
        "created_at": now,
        "updated_at": now,
    }
    base.update(fields)
    return JobRecord.model_validate(base)


def rich() -> JobRecord:
    """A record with every field set, text that needs escaping included."""
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    price = Price(currency="CNY", core_hour=0.05, gpu_hour=1.25)
    return job(
        login="alice",
        spec=JobSpec(command="echo", arguments=["héllo", 'quo"te'], environment={"A": "1"}),
        state=JobState.COMPLETED,
        native_id="7328",
        native_state="COMPLETED",
        reason="ok — done",
        exit_code=0,
        idempotency_key="key-1",
        elements=[ElementRecord(index=0, state=JobState.COMPLETED, exit_code=0, started_at=at)],
        staging=Staging(
            inputs=[StagedFile(index=0, path="/in", state="done", size=3)], collected=True
        ),
        placement=PlacementDecision(
            chosen="local", prefer=["cost"], explanation="cheapest", decided_at=at
        ),
        price=price,
        usage=JobUsage(cores=2, gpus=0, started_at=at, ended_at=at, price=price, cost=0.5),
        started_at=at,
        cancel_requested=True,
        submit_attempts=2,
        submitted_at=at,
        finished_at=at,
    )
