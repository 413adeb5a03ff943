"""The jobs table of the PostgreSQL store (its schema: schema.py): the values a
JobRecord's fields are written as, the SQL building a record's JSON inside the
server (so the gateway only has pydantic parse one text per record, and a summary's
script never leaves the server), and the list cursors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from pydantic import BaseModel

from adapters.base import TERMINAL_STATES, JobState
from gateway.jobs.records import JobRecord
from gateway.jobs.store import FIXED_FIELDS, Ended, InvalidCursor, JobQuery
from gateway.store import job_sql

COLUMNS = (
    "id owner center login state native_id native_state reason exit_code idempotency_key elements "
    "staging placement price usage started_at cancel_requested submit_attempts spec created_at "
    "updated_at submitted_at finished_at application task"
).split()
UPDATABLE = frozenset(COLUMNS) - FIXED_FIELDS
TERMINAL = sorted(s.value for s in TERMINAL_STATES)

#: Columns holding a JSON document (jsonb), written as JSON text cast in the SQL.
JSON_COLUMNS = frozenset(
    {"elements", "staging", "placement", "price", "usage", "spec", "application", "task"}
)

# Column names are the fixed tuple above, never user input.
INSERT = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ("  # noqa: S608
    + ", ".join(f"%({c})s::jsonb" if c in JSON_COLUMNS else f"%({c})s" for c in COLUMNS)
    + ") ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    " RETURNING 1"
)


def _record_sql(spec: str) -> str:
    """Each row as the JSON text of its JobRecord; `spec` is the SQL of the spec's JSON."""
    values = ", ".join(f"'{c}', {spec if c == 'spec' else c}" for c in COLUMNS)
    return f"json_build_object({values})::text"


RECORD = _record_sql("spec")
#: A record without its spec's content (script "" where it has one, no arguments,
#: no environment), as `active` and `finished` give it: the script stays in the server.
SUMMARY = _record_sql("jsonb_set(spec - 'arguments' - 'environment', '{script}', '\"\"', false)")

GET = f"SELECT {RECORD} FROM jobs WHERE id = %s"  # noqa: S608
#: The job holding an owner's idempotency key.
HOLDER = f"SELECT {RECORD} FROM jobs WHERE owner = %s AND idempotency_key = %s"  # noqa: S608
#: The summaries of every job not yet in a terminal state, oldest first.
ACTIVE = f"SELECT {SUMMARY} FROM jobs WHERE state <> ALL(%s) ORDER BY created_at, id"  # noqa: S608
COUNTS = "SELECT center, state, count(*) FROM jobs GROUP BY center, state"
#: The lease a write is made under: still held, with its fence (migration 2's table).
LEASE_HELD = (
    "SELECT 1 FROM leases WHERE name = %s AND holder = %s AND fence = %s "
    "AND expires_at > now() FOR SHARE"
)


def _text(value: str | None) -> str | None:
    # PostgreSQL text holds no NUL; a center's message with one keeps the rest.
    return value.replace("\0", "\ufffd") if value is not None and "\0" in value else value


def to_row(record: JobRecord) -> dict[str, Any]:
    row: dict[str, Any] = {c: getattr(record, c) for c in COLUMNS if c not in JSON_COLUMNS}
    row["state"] = record.state.value
    for column in ("native_state", "reason"):
        row[column] = _text(row[column])
    row["spec"] = record.spec.model_dump_json(exclude_none=True)
    row["staging"] = record.staging.model_dump_json()
    row["elements"] = json.dumps([e.model_dump(mode="json") for e in record.elements])
    for column in ("placement", "price", "usage", "application"):
        value = getattr(record, column)
        row[column] = value.model_dump_json() if value is not None else None
    row["task"] = json.dumps(record.task) if record.task is not None else None
    for column in ("created_at", "updated_at", "submitted_at", "started_at", "finished_at"):
        row[column] = aware(row[column])
    return row


def aware(moment: datetime | None) -> datetime | None:
    """A naive time is taken as UTC (as the SQLite store does)."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def column_value(column: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, BaseModel):  # staging, placement, price, usage, application
        return value.model_dump_json()
    if isinstance(value, list):  # elements
        return json.dumps(
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        )
    if isinstance(value, dict) and column in JSON_COLUMNS:
        return json.dumps(value)
    if isinstance(value, str):
        return _text(value)
    return value


def update_sql(fields: dict[str, Any], now: datetime) -> tuple[sql.Composed, dict[str, Any]]:
    """The UPDATE of one job's `fields` (and updated_at = `now`), returning the new
    record, to run with its id as `_id`. ValueError for a field that cannot change."""
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    values = {k: column_value(k, v) for k, v in {**fields, "updated_at": now}.items()}
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}{}").format(
            sql.Identifier(k),
            sql.Placeholder(k),
            sql.SQL("::jsonb" if k in JSON_COLUMNS else ""),
        )
        for k in values
    )
    statement = sql.SQL("UPDATE jobs SET {} WHERE id = %(_id)s RETURNING {}").format(
        assignments, sql.SQL(RECORD)
    )
    return statement, values


def encode_cursor(record: JobRecord) -> str:
    created = aware(record.created_at)
    assert created is not None
    return job_sql.encode_cursor(created.astimezone(UTC).isoformat(), record.id)


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of a cursor; InvalidCursor if this store did not make it."""
    moment, job_id = job_sql.decode_cursor(cursor)
    if moment.tzinfo is None or "\0" in job_id:
        raise InvalidCursor()
    return moment, job_id


def list_sql(query: JobQuery) -> tuple[str, list[Any]]:
    """The SELECT of a page of `query`: up to limit + 1 rows (whether more follow),
    of them the records' texts of the page (at most `limit`, the first and those within
    `max_bytes` of text), each with how many rows matched: more follow if more did."""
    where, args = job_sql.equal("%s", (("owner", query.owner), ("center", query.center)))
    if query.states:
        where.append("state = ANY(%s)")
        args.append([s.value for s in query.states])
    if query.tasks_only:
        where.append("task IS NOT NULL")
    if query.cursor is not None:
        created, job_id = decode_cursor(query.cursor)
        where.append("(created_at, id) < (%s, %s)")
        args.extend([created, job_id])
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    # Column names and clauses are fixed text above; values are parameters.
    statement = (
        f"WITH page AS (SELECT {RECORD} AS rec, created_at, id FROM jobs {clause} "  # noqa: S608
        "ORDER BY created_at DESC, id DESC LIMIT %s), "
        "sized AS (SELECT rec, created_at, id, row_number() OVER w AS n, "
        "sum(octet_length(rec)) OVER w AS upto, count(*) OVER () AS total "
        "FROM page WINDOW w AS (ORDER BY created_at DESC, id DESC ROWS UNBOUNDED PRECEDING)) "
        "SELECT rec, total FROM sized WHERE n <= %s AND (n = 1 OR upto <= %s) ORDER BY n"
    )
    cap = query.max_bytes if query.max_bytes is not None else (1 << 62)
    return statement, [*args, query.limit + 1, query.limit, cap]


def finished_sql(query: Ended) -> tuple[str, list[Any]]:
    """The SELECT of the summaries of the jobs of `query`, oldest first."""
    where, args = job_sql.ended_where(query, "%s", aware)
    where.insert(0, "state = ANY(%s)")
    return (
        f"SELECT {SUMMARY} FROM jobs WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY finished_at, id",
        [TERMINAL, *args],
    )
