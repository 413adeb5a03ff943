"""Dependencies between gateway jobs: what waits, what is refused, what is dropped."""

from __future__ import annotations

import uuid

import pytest

from adapters.base import JobState
from gateway.http.errors import status_of
from gateway.jobs.dependencies import DependencyNeverMet, native_dependencies
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord
from gateway.units import utcnow


def _parent(state: JobState, native_id: str | None = "41") -> JobRecord:
    now = utcnow()
    return JobRecord(
        id=str(uuid.uuid4()),
        owner="alice",
        center="c",
        state=state,
        native_id=native_id,
        spec=JobSpec(command="true"),
        created_at=now,
        updated_at=now,
    )


def _child(parent: JobRecord, condition: str) -> JobSpec:
    return JobSpec(command="true", dependencies=[{"job": parent.id, "condition": condition}])


def test_a_live_parent_becomes_a_native_dependency() -> None:
    parent = _parent(JobState.RUNNING)
    assert native_dependencies(_child(parent, "afterok"), [parent]) == [("afterok", "41")]


def test_a_parent_not_yet_at_its_center_makes_the_child_wait() -> None:
    parent = _parent(JobState.SUBMITTING, native_id=None)
    assert native_dependencies(_child(parent, "afterany"), [parent]) is None


@pytest.mark.parametrize(
    ("condition", "state"),
    [
        ("afterok", JobState.COMPLETED),
        ("afternotok", JobState.FAILED),
        ("afterany", JobState.CANCELLED),
        ("after", JobState.RUNNING),
    ],
)
def test_a_condition_already_met_is_dropped(condition: str, state: JobState) -> None:
    parent = _parent(state)
    assert native_dependencies(_child(parent, condition), [parent]) == []


@pytest.mark.parametrize(
    ("condition", "state"),
    [
        ("afterok", JobState.FAILED),
        ("afterok", JobState.CANCELLED),
        ("afternotok", JobState.COMPLETED),
    ],
)
def test_a_condition_that_can_never_hold_is_refused(condition: str, state: JobState) -> None:
    parent = _parent(state)
    with pytest.raises(DependencyNeverMet) as err:
        native_dependencies(_child(parent, condition), [parent])
    assert (err.value.code, err.value.field) == ("dependency_never_met", "dependencies[0].job")
    assert status_of(err.value) == 422
