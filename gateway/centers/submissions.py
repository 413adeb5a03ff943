"""How each center's recent submissions went, for its health and for retries.

A center can answer every probe (SSH, the scheduler's ping, its storage) and still
fail every submission: a login environment that breaks the submit command, a full
home directory, a submit filter. The job service tells this tracker of every
submission's outcome; the health monitor degrades a center whose submissions keep
failing, and says why. A refusal by the scheduler (a bad spec) is the center working
as it should, and is not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

#: A SUBMITTING job whose submission failed is sent again no sooner than this after its
#: first failure, then twice as long after each further one, up to `RETRY_CAP`.
RETRY_FIRST = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=5)


def retry_delay(attempts: int) -> timedelta:
    """How long after its last failed attempt a job waits before attempt `attempts` + 1."""
    return min(RETRY_CAP, RETRY_FIRST * 2 ** max(0, attempts - 1))


@dataclass
class FailingSubmissions:
    """Consecutive failed submissions at one center, since the last that went through."""

    count: int
    since: float  # epoch seconds of the first of them
    last_error: str


class SubmissionOutcomes:
    def __init__(self) -> None:
        self._failing: dict[str, FailingSubmissions] = {}

    def succeeded(self, center_id: str) -> None:
        self._failing.pop(center_id, None)

    def failed(self, center_id: str, error: str) -> None:
        failing = self._failing.get(center_id)
        if failing is None:
            self._failing[center_id] = FailingSubmissions(1, time.time(), error)
        else:
            failing.count += 1
            failing.last_error = error

    def failing(self, center_id: str) -> FailingSubmissions | None:
        """The center's run of failed submissions, if its last one failed."""
        return self._failing.get(center_id)
