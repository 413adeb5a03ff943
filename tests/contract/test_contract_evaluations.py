"""The EvaluationStore contract, over every implementation (tests/contract/conftest.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from gateway.centers.evaluation.models import CheckResult, EvaluationRecord, Figures
from gateway.centers.evaluation.store import EvaluationStore
from gateway.units import utcnow
from tests.contract.conftest import Backend


def evaluation(center: str = "centera", seconds: int = 0, **fields: object) -> EvaluationRecord:
    return EvaluationRecord.model_validate(
        {
            "id": str(uuid.uuid4()),
            "center": center,
            "requested_by": "root",
            "created_at": utcnow() + timedelta(seconds=seconds),
            **fields,
        }
    )


async def test_a_saved_evaluation_reads_back_as_it_was_saved(
    evaluation_store: EvaluationStore,
) -> None:
    record = evaluation(
        checks=[CheckResult(name="ssh.connect", title="SSH", weight=1, required=True)],
        figures=Figures(ssh_latency_ms_p50=3.5, kernel="dgemm"),
    )
    assert await evaluation_store.save(record) is record
    assert await evaluation_store.get(record.id) == record
    record.checks[0].state = "passed"  # not saved: the stored record keeps its state
    stored = await evaluation_store.get(record.id)
    assert stored is not None and stored.checks[0].state == "pending"
    record.state, record.score, record.verdict = "DONE", 100.0, "admit"
    record.finished_at = utcnow()
    await evaluation_store.save(record)
    assert await evaluation_store.get(record.id) == record
    assert await evaluation_store.get(str(uuid.uuid4())) is None
    await evaluation_store.ping()


async def test_list_is_the_centers_evaluations_newest_first(
    evaluation_store: EvaluationStore,
) -> None:
    ours = [await evaluation_store.save(evaluation(seconds=i)) for i in range(3)]
    await evaluation_store.save(evaluation("centerb", seconds=10))
    assert [r.id for r in await evaluation_store.list("centera")] == [r.id for r in reversed(ours)]
    assert [r.id for r in await evaluation_store.list("centera", limit=1)] == [ours[2].id]
    assert await evaluation_store.list("centerc") == []


async def test_latest_finished_is_the_newest_that_ended(evaluation_store: EvaluationStore) -> None:
    assert await evaluation_store.latest_finished("centera") is None
    done = await evaluation_store.save(evaluation(seconds=0, state="DONE", verdict="admit"))
    error = await evaluation_store.save(evaluation(seconds=1, state="ERROR", error="stopped"))
    await evaluation_store.save(evaluation(seconds=2))  # still running: does not count
    await evaluation_store.save(evaluation("centerb", seconds=3, state="DONE"))
    assert await evaluation_store.latest_finished("centera") == error
    error.state = "RUNNING"  # never happens, but the store goes by the state saved
    await evaluation_store.save(error)
    assert await evaluation_store.latest_finished("centera") == done


async def test_running_is_every_running_evaluation_oldest_first(
    evaluation_store: EvaluationStore,
) -> None:
    first = await evaluation_store.save(evaluation("centerb", seconds=0))
    await evaluation_store.save(evaluation(seconds=1, state="DONE"))
    second = await evaluation_store.save(evaluation(seconds=2))
    assert [r.id for r in await evaluation_store.running()] == [first.id, second.id]


async def test_evaluations_outlive_the_store_object(evaluation_backend: Backend) -> None:
    first = evaluation_backend.make()
    await first.open()
    record = await first.save(evaluation(state="DONE"))
    await first.close()
    second = evaluation_backend.make()
    await second.open()
    try:
        assert await second.latest_finished("centera") == record
    finally:
        await second.close()
