"""Jobs: submit, list, read, cancel, output."""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web
from pydantic import ValidationError

from adapters.base import JobState
from adapters.errors import AdapterError
from gateway.errors import DomainError, validation_error
from gateway.http.audit import AUDIT_TARGET
from gateway.http.auth import PRINCIPAL, add_route
from gateway.http.errors import error_body, status_of
from gateway.http.params import bool_query, cursor_query, int_query, json_body
from gateway.http.routes.files import body_chunks, check_sha256, expected_sha256
from gateway.http.routes.keys import CONFIG, POLLER, SERVICE
from gateway.jobs.batch import BatchItem
from gateway.jobs.models import JobBatch, JobSpec
from gateway.jobs.records import JobRecord
from gateway.jobs.store import JobQuery

MAX_OUTPUT_CHUNK = 4 << 20
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}\Z")
_STREAMS = ("stdout", "stderr")


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise DomainError(
            "invalid_request",
            "Idempotency-Key: must be 1-200 printable ASCII characters without spaces",
            "Idempotency-Key",
        )
    return key


def check_spec_size(request: web.Request, spec: JobSpec, prefix: str = "") -> None:
    """`spec_too_large`, naming the largest part, for a spec whose script (or
    command), arguments and environment together pass `limits.max_spec`."""
    cap = request.app[CONFIG].gateway.limits.max_spec << 20
    sizes = spec.content_sizes()
    total = sum(sizes.values())
    if total <= cap:
        return
    largest = max(sizes, key=lambda name: sizes[name])
    field = f"{prefix}{largest}"
    raise DomainError(
        "spec_too_large",
        f"{field}: the job's script, command, arguments and environment come to "
        f"{total} bytes, more than the {cap} bytes (limits.max_spec) a job may carry; "
        "put large inputs in files (inputs) instead",
        field,
        size=total,
        limit=cap,
    )


async def submit_job(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    del body  # the spec holds what is kept; the parsed body need not stay in memory
    check_spec_size(request, spec)
    outcome = await request.app[SERVICE].submit(
        request[PRINCIPAL].user, spec, _idempotency_key(request)
    )
    record = outcome.record
    request[AUDIT_TARGET] = {"job": record.id, "center": record.center}
    request.app[POLLER].wake()
    return web.json_response(
        record.public(),
        status=_submitted_status(record, outcome.created),
        headers={"Location": f"/v1/jobs/{record.id}"},
    )


def _submitted_status(record: JobRecord, created: bool) -> int:
    if not created:
        return 200  # an earlier job, returned for the idempotency key
    if record.state is JobState.SUBMITTING:
        return 202  # stored; the center's answer is pending and will be reconciled
    return 201


def _item_status(item: BatchItem) -> int:
    """A batch job's status: what a single submission of it would have answered."""
    if item.error is not None:
        return status_of(item.error)
    assert item.record is not None
    return _submitted_status(item.record, item.created)


async def submit_batch(request: web.Request) -> web.Response:
    """Independent jobs at once. A spec that is not valid refuses the whole batch
    (nothing is stored); past that, each job has its own outcome: 201 when all were
    sent, else 207 with each job's status, record or error."""
    body = await json_body(request)
    try:
        batch = JobBatch.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    del body
    for i, spec in enumerate(batch.jobs):
        check_spec_size(request, spec, f"jobs[{i}].")
    items = await request.app[SERVICE].submit_batch(
        request[PRINCIPAL].user, batch.jobs, _idempotency_key(request)
    )
    request[AUDIT_TARGET] = {
        "jobs": [item.record.id for item in items if item.record is not None],
        "refused": sum(1 for item in items if item.record is None),
    }
    request.app[POLLER].wake()
    results = []
    statuses = [_item_status(item) for item in items]
    for item, item_status in zip(items, statuses, strict=True):
        entry: dict[str, object] = {"index": item.index, "status": item_status}
        if item.record is not None:
            entry["job"] = item.record.public()
        if item.error is not None:
            entry.update(error_body(item.error))
        results.append(entry)
    status = 201 if all(s == 201 for s in statuses) else 207
    return web.json_response({"results": results}, status=status)


async def list_jobs(request: web.Request) -> web.Response:
    states: list[JobState] = []
    for raw in filter(None, request.query.get("state", "").split(",")):
        try:
            states.append(JobState(raw.strip().upper()))
        except ValueError:
            choices = ", ".join(s.value for s in JobState)
            raise DomainError(
                "invalid_request", f"state: {raw!r} is not one of {choices}", "state"
            ) from None
    center = request.query.get("center") or None
    page = await request.app[SERVICE].list(
        JobQuery(
            request[PRINCIPAL].owner_filter("jobs.read"),
            states=states,
            center=center,
            limit=int_query(request, "limit", 100, 1, 1000),
            cursor=cursor_query(request),
            max_bytes=request.app[CONFIG].gateway.limits.max_page << 20,
        )
    )
    body = b'{"jobs":[%s],"next_cursor":%s}' % (
        b",".join(j.public_json() for j in page.jobs),
        json.dumps(page.next_cursor).encode(),
    )
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def get_job(request: web.Request) -> web.Response:
    owner = request[PRINCIPAL].owner_filter("jobs.read")
    record = await request.app[SERVICE].get(owner, request.match_info["id"])
    return web.Response(body=record.public_json(), content_type="application/json", charset="utf-8")


async def cancel_job(request: web.Request) -> web.Response:
    owner = request[PRINCIPAL].owner_filter("jobs.cancel")
    record = await request.app[SERVICE].cancel(owner, request.match_info["id"])
    request.app[POLLER].wake()
    return web.json_response(record.public(), status=200 if record.state.is_terminal else 202)


async def job_output(request: web.Request) -> web.StreamResponse:
    stream = request.match_info["stream"]
    if stream not in _STREAMS:
        raise DomainError(
            "not_found", f"stream: must be stdout or stderr, got {stream!r}", "stream"
        )
    offset = int_query(request, "offset", 0, 0, 1 << 62)
    limit = int_query(request, "limit", 1 << 20, 1, MAX_OUTPUT_CHUNK)
    follow = bool_query(request, "follow")
    element = int_query(request, "element", -1, 0, 1 << 31)
    index = None if element < 0 else element
    service = request.app[SERVICE]
    user, job_id = request[PRINCIPAL].owner_filter("jobs.output"), request.match_info["id"]

    record, chunk = await service.output(user, job_id, stream, offset, limit, index)
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Job-State": record.state.value,
        "X-Output-Offset": str(chunk.offset),
        "X-Output-Exists": "true" if chunk.exists else "false",
    }
    if not follow:
        headers["X-Output-Next-Offset"] = str(chunk.offset + len(chunk.data))
        if chunk.size is not None:
            headers["X-Output-Size"] = str(chunk.size)
        return web.Response(body=chunk.data, headers=headers)

    # Follow: stream what there is, then what comes, until the job has ended
    # and everything it wrote has been sent.
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    interval = request.app[POLLER].interval
    offset = chunk.offset
    while True:
        if chunk.data:
            await response.write(chunk.data)
            offset += len(chunk.data)
        drained = len(chunk.data) < limit
        if drained and record.state.is_terminal:
            break
        if drained:
            await asyncio.sleep(interval)  # the next poll brings new output or state
        try:
            record, chunk = await service.output(user, job_id, stream, offset, limit, index)
        except AdapterError:
            break  # the client sees the stream end and may resume from its offset
    await response.write_eof()
    return response


async def upload_input(request: web.Request) -> web.Response:
    """An `upload: true` input of a job not yet submitted, streamed to its center."""
    service = request.app[SERVICE]
    owner = request[PRINCIPAL].owner_filter("jobs.submit")
    record = await service.get(owner, request.match_info["id"])
    raw = request.match_info["index"]
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise DomainError("invalid_request", f"index: not a number: {raw!r}", "index")
    index = int(raw)
    expected = expected_sha256(request)
    request[AUDIT_TARGET] = {"job": record.id, "input": index}
    files, full = await service.staging.upload_target(record, index)
    size = await files.write(full, body_chunks(request), 0, request.content_length, shown=full)
    digest = None
    if expected is not None:
        digest, size = await check_sha256(files, full, expected)
    record = await service.staging.uploaded(record, index, full, size, digest)
    if all(s.state == "done" for s in record.staging.inputs) and record.id not in service.in_flight:
        service.resume(record)
    return web.json_response({"index": index, "path": full, "size": size, "sha256": digest})


def setup_routes(app: web.Application) -> None:
    add_route(app, "POST", "/v1/jobs", submit_job, name="jobs.submit", permission="jobs.submit")
    add_route(
        app, "POST", "/v1/jobs/batch", submit_batch, name="jobs.batch", permission="jobs.submit"
    )
    add_route(app, "GET", "/v1/jobs", list_jobs, name="jobs.list", permission="jobs.read")
    add_route(app, "GET", "/v1/jobs/{id}", get_job, name="jobs.get", permission="jobs.read")
    add_route(
        app, "DELETE", "/v1/jobs/{id}", cancel_job, name="jobs.cancel", permission="jobs.cancel"
    )
    add_route(
        app,
        "GET",
        "/v1/jobs/{id}/output/{stream}",
        job_output,
        name="jobs.output",
        permission="jobs.output",
    )
    add_route(
        app,
        "PUT",
        "/v1/jobs/{id}/inputs/{index}",
        upload_input,
        name="jobs.upload_input",
        permission="jobs.submit",
    )
