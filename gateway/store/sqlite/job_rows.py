"""The jobs table of the SQLite store (its schema: schema.py): the mapping
between a JobRecord and its row (each time in one fixed-width UTC form, so that
SQL compares and orders the texts as the times they stand for), the SQL building
a record's JSON inside SQLite, and the list cursors."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from adapters.base import TERMINAL_STATES, JobState
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord
from gateway.jobs.store import FIXED_FIELDS, Ended, InvalidCursor, JobQuery
from gateway.store import job_sql

COLUMNS = (
    "id owner center login state native_id native_state reason exit_code idempotency_key elements "
    "staging placement price usage started_at cancel_requested submit_attempts spec created_at "
    "updated_at submitted_at finished_at application task"
).split()
# Column names are the fixed tuple above, never user input.
INSERT = f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"  # noqa: S608
UPDATABLE = set(COLUMNS) - FIXED_FIELDS
TERMINAL = tuple(sorted(s.value for s in TERMINAL_STATES))


#: Columns holding a time (or NULL), each written by `time_text`.
_TIME_COLUMNS = ("created_at", "updated_at", "submitted_at", "started_at", "finished_at")
#: Columns holding a JSON document (or NULL).
_JSON_COLUMNS = ("placement", "price", "usage", "application", "task")
#: Columns holding a JSON document that is never NULL -> the text standing for an empty one.
_DOCUMENT_COLUMNS = {"spec": "", "elements": "", "staging": "{}"}


def to_row(record: JobRecord) -> dict[str, Any]:
    row = record.model_dump(mode="json", exclude={"spec"})
    row["spec"] = record.spec.model_dump_json(exclude_none=True)
    row["elements"] = json.dumps(row["elements"])
    row["staging"] = json.dumps(row["staging"])
    for column in _JSON_COLUMNS:
        row[column] = json.dumps(row[column]) if row[column] is not None else None
    row["cancel_requested"] = int(record.cancel_requested)
    for column in _TIME_COLUMNS:
        moment = getattr(record, column)
        row[column] = time_text(moment) if moment is not None else None
    return row


def _json_expression(column: str) -> str:
    """The SQL giving `column` as a JSON value, as `from_row` would read it."""
    if column in _DOCUMENT_COLUMNS:
        empty = _DOCUMENT_COLUMNS[column]
        return f"json(coalesce(nullif({column}, ''), '{empty}'))" if empty else f"json({column})"
    if column in _JSON_COLUMNS:
        return f"json(nullif({column}, ''))"
    if column == "cancel_requested":
        return "json(CASE WHEN cancel_requested THEN 'true' ELSE 'false' END)"
    return column


def _record_sql(spec: str) -> str:
    """Each selected row as the JSON text of its JobRecord, built by SQLite itself so
    that the event loop only has pydantic parse it, in one pass in Rust; `spec` is the
    SQL for the spec's JSON. Column names are the fixed tuple above, never user input."""
    values = (f"'{c}', {spec if c == 'spec' else _json_expression(c)}" for c in COLUMNS)
    return f"json_object({', '.join(values)})"


RECORD = _record_sql(_json_expression("spec"))
GET = f"SELECT {RECORD} FROM jobs WHERE id = ?"  # noqa: S608
#: A record without its spec's content (script "", no arguments, no environment), as
#: `JobStore.active` and `finished` give it: a few hundred bytes whatever the script,
#: and the large text never reaches Python.
SUMMARY = _record_sql(
    "json_replace(json_remove(json(spec), '$.arguments', '$.environment'), '$.script', '')"
)


def from_json(text: str) -> JobRecord:
    return JobRecord.model_validate_json(text)


def from_row(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    data["spec"] = JobSpec.model_validate_json(data["spec"])
    data["elements"] = json.loads(data["elements"])
    data["staging"] = json.loads(data["staging"] or "{}")
    for column in _JSON_COLUMNS:
        data[column] = json.loads(data[column]) if data[column] else None
    data["cancel_requested"] = bool(data["cancel_requested"])
    return JobRecord.model_validate(data)


def time_text(moment: datetime) -> str:
    """`moment` as the store writes every time: in UTC, with all six digits of its
    microseconds (`2026-12-03T11:14:45.000000Z`), so that SQL compares and orders
    the texts as the times they stand for. A naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def column_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, BaseModel):  # staging, placement, price, usage
        return value.model_dump_json()
    if isinstance(value, dict):  # task
        return json.dumps(value)
    if isinstance(value, list):  # elements
        return json.dumps(
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        )
    return value


def encode_cursor(record: JobRecord) -> str:
    return job_sql.encode_cursor(time_text(record.created_at), record.id)


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(created_at text, id) of a cursor; InvalidCursor if this store did not make it."""
    moment, job_id = job_sql.decode_cursor(cursor)
    try:
        # Compared with the stored text: in its form, whatever form the cursor has.
        return time_text(moment), job_id
    except Exception as exc:
        raise InvalidCursor() from exc


#: The job holding an owner's idempotency key.
HOLDER = "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?"


def update_sql(fields: dict[str, Any], now: datetime) -> tuple[str, dict[str, Any]]:
    """The UPDATE of one job's `fields` (and updated_at = `now`), to run with its id as
    `_id`. ValueError for a field that cannot change."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    values = {k: column_value(v) for k, v in {**fields, "updated_at": now}.items()}
    assignments = ", ".join(f"{k} = :{k}" for k in values)
    return f"UPDATE jobs SET {assignments} WHERE id = :_id", values  # noqa: S608


def list_sql(query: JobQuery) -> tuple[str, list[Any]]:
    """The SELECT of a page of `query` (one row more than its limit: whether more follow)."""
    where, args = job_sql.equal("?", (("owner", query.owner), ("center", query.center)))
    if query.states:
        where.append(f"state IN ({', '.join('?' for _ in query.states)})")
        args.extend(s.value for s in query.states)
    if query.tasks_only:
        where.append("task IS NOT NULL")
    if query.cursor is not None:
        created, job_id = decode_cursor(query.cursor)
        where.append("(created_at < ? OR (created_at = ? AND id < ?))")
        args.extend([created, created, job_id])
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {RECORD} FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT ?"  # noqa: S608
    return sql, [*args, query.limit + 1]


def finished_sql(query: Ended) -> tuple[str, list[Any]]:
    """The SELECT of the summaries of the jobs of `query`, oldest first."""
    where, args = job_sql.ended_where(query, "?", time_text)
    where.insert(0, f"state IN ({', '.join('?' for _ in TERMINAL)})")
    return (
        f"SELECT {SUMMARY} FROM jobs WHERE {' AND '.join(where)} ORDER BY finished_at",  # noqa: S608
        [*TERMINAL, *args],
    )


#: The summaries of every job not yet in a terminal state, oldest first.
ACTIVE = (
    f"SELECT {SUMMARY} FROM jobs WHERE state NOT IN ({', '.join('?' for _ in TERMINAL)}) "  # noqa: S608
    "ORDER BY created_at"
)
COUNTS = "SELECT center, state, COUNT(*) FROM jobs GROUP BY center, state"
