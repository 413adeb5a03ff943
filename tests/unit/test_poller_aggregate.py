"""An array job's state from its elements."""

from __future__ import annotations

import uuid

import pytest

from adapters.arrays import array_outcome
from adapters.base import ArrayElement, JobState, NativeStatus
from gateway.jobs.models import JobSpec
from gateway.jobs.poller import merge_elements
from gateway.jobs.records import ElementRecord, JobRecord
from gateway.units import utcnow

Q, R, H = JobState.QUEUED, JobState.RUNNING, JobState.HELD
C, F, T, X = JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED


def _elements(*states: JobState, codes: tuple[int | None, ...] = ()) -> list[ElementRecord]:
    codes = codes or (None,) * len(states)
    return [
        ElementRecord(index=i, state=s, exit_code=c)
        for i, (s, c) in enumerate(zip(states, codes, strict=True))
    ]


@pytest.mark.parametrize(
    ("states", "whole"),
    [
        ((Q, Q, Q), Q),
        ((C, R, Q), R),
        ((C, C, Q), Q),
        ((H, H), H),
        ((H, Q), Q),
        ((C, C, C), C),
        ((C, F, C), F),
        ((C, T, X), T),
        ((C, X), X),
        ((JobState.UNKNOWN, C), JobState.UNKNOWN),
    ],
)
def test_array_state_follows_its_elements(states: tuple[JobState, ...], whole: JobState) -> None:
    assert array_outcome(_elements(*states))[0] is whole


def test_array_exit_code_is_the_highest_once_all_ended() -> None:
    assert array_outcome(_elements(C, F, F, codes=(0, 3, 1))) == (F, 3)
    assert array_outcome(_elements(C, R, codes=(0, None))) == (R, None)


def _array_job(spec: str, elements: list[ElementRecord] | None = None) -> JobRecord:
    now = utcnow()
    return JobRecord(
        id=str(uuid.uuid4()),
        owner="alice",
        center="c",
        state=Q,
        created_at=now,
        updated_at=now,
        spec=JobSpec(command="true", array=spec),
        elements=elements or [],
    )


def test_unreported_elements_keep_their_last_state_or_wait_queued() -> None:
    job = _array_job("0-3", [ElementRecord(index=0, native_id="7_0", state=C, exit_code=0)])
    status = NativeStatus("7", R, "RUNNING", elements=[ArrayElement(1, "7_1", R, "RUNNING")])
    merged = merge_elements(job, status)
    assert [(e.index, e.state) for e in merged] == [(0, C), (1, R), (2, Q), (3, Q)]
    assert merged[0].exit_code == 0
