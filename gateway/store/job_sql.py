"""What the jobs tables of both backends build alike, but for their placeholder and
how they write a time: the conditions of a selection, and the list cursors' text."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from gateway.jobs.store import Ended, InvalidCursor


def equal(mark: str, pairs: Iterable[tuple[str, Any]]) -> tuple[list[str], list[Any]]:
    """`column = <mark>` of each (column, value) whose value is not None, and the values.
    Column names are fixed text of the caller's, never user input."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in pairs:
        if value is not None:
            where.append(f"{column} = {mark}")
            args.append(value)
    return where, args


def ended_where(
    query: Ended, mark: str, moment: Callable[[datetime], Any]
) -> tuple[list[str], list[Any]]:
    """The conditions of `query` beside the terminal state's, and their values; `moment`
    gives a time as the backend compares them."""
    where, args = equal(mark, (("owner", query.owner), ("center", query.center)))
    for condition, value in (("finished_at >=", query.since), ("finished_at <", query.until)):
        if value is not None:
            where.append(f"{condition} {mark}")
            args.append(moment(value))
    return where, args


def encode_cursor(created: str, job_id: str) -> str:
    """The cursor of the page that goes on past the job `job_id`, created at `created`."""
    raw = f"{created}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of a cursor; InvalidCursor if it is not one of `encode_cursor`'s."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        created, job_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), job_id
    except Exception as exc:
        raise InvalidCursor() from exc
