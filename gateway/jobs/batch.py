"""Batch submission: independent jobs at once, each with its own outcome.

Every job is stored (one commit for all) before any center is contacted, like a
single submission. The jobs that need no staging and wait for no job go to their
center together: per (center, login) one `submit_many`, which sends many jobs per
remote command. Each job goes under its lease `send/<id>` (gateway/jobs/sending.py),
acquired before the jobs are stored and held until its outcome is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.base import Adapter
from gateway.errors import DomainError
from gateway.jobs.dependencies import load_parents
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord
from gateway.jobs.sending import SubmitRejectedError, send_lease, sent_fields, to_request
from gateway.store.leases import Lease, claim_many

if TYPE_CHECKING:
    from gateway.jobs.service import JobService


@dataclass(frozen=True)
class BatchItem:
    """One job's outcome in a batch, as a single submission of it would have had:
    refused (`error`, with the FAILED `record` when its center refused it), an
    earlier job returned for the idempotency key (`created` False), or stored with
    its center's answer pending (record SUBMITTING) or sent (record QUEUED)."""

    index: int
    record: JobRecord | None = None
    error: DomainError | None = None
    created: bool = True


@dataclass
class _Group:
    """The jobs of a batch that go to one center as one login."""

    center: str
    adapter: Adapter
    jobs: list[tuple[int, JobRecord]]
    leases: list[Lease]


def internal_error(job_id: str) -> DomainError:
    return DomainError(
        "internal_error", "internal error while submitting; see the gateway log", job_id=job_id
    )


def _refused(i: int, exc: Exception, record: JobRecord) -> BatchItem:
    """The item of a job whose sending raised: SubmitRejectedError carries the FAILED
    record; anything else is a fault of ours (logged, and the job FAILED, where it
    happened)."""
    if isinstance(exc, SubmitRejectedError):
        return BatchItem(i, exc.record, exc.error)
    return BatchItem(i, error=internal_error(record.id))


async def submit_batch(
    service: JobService, owner: str, specs: Sequence[JobSpec], idempotency_key: str | None
) -> list[BatchItem]:
    """Submit independent jobs; each has its own outcome, in the order given. With an
    idempotency key, job i has the key `<key>#<i>`."""
    store = service.store
    items: list[BatchItem | None] = [None] * len(specs)
    active: list[JobRecord] | None = None
    new: list[tuple[int, JobRecord]] = []
    for i, spec in enumerate(specs):
        key = f"{idempotency_key}#{i}" if idempotency_key is not None else None
        try:
            parents = await load_parents(store, owner, spec)
            if spec.center == "auto" and not parents and active is None:
                active = await store.active()  # once: placement weighs them
            record = await service.new_record(owner, spec, key, parents, active)
        except DomainError as exc:
            items[i] = BatchItem(i, error=exc)
            continue
        if not spec.inputs and not spec.dependencies:
            # Sent right after the commit below: counted as sent from the start, so
            # after a crash in between it is looked up at its center before it is
            # sent again. The poller leaves it to this request meanwhile.
            record.submit_attempts = 1
            service.in_flight.add(record.id)
        new.append((i, record))
    sending: dict[str, Lease] = {}
    try:
        direct = [r.id for _, r in new if r.id in service.in_flight]
        if direct:  # one statement for the batch's leases
            names = [send_lease(job_id) for job_id in direct]
            sending = await service.leases.acquire_many(names, service.lease_ttl)
        duplicates = await store.insert_many([r for _, r in new])
    except BaseException:
        service.in_flight.difference_update(r.id for _, r in new)
        await service.leases.release_many(list(sending.values()))
        raise
    groups: dict[int, _Group] = {}
    alone: list[tuple[int, JobRecord, asyncio.Task[JobRecord]]] = []
    for (i, record), dup in zip(new, duplicates, strict=True):
        if dup is not None:
            service.in_flight.discard(record.id)
            if (lease := sending.pop(send_lease(record.id), None)) is not None:
                await service.leases.release(lease)
            items[i] = BatchItem(i, dup.existing, created=False)
        elif record.spec.inputs:
            service.resume(record)
            items[i] = BatchItem(i, record)  # staging may take long
        elif record.spec.dependencies:
            alone.append((i, record, service.resume(record)))
        else:
            center = service.centers.get(record.center)
            adapter = center.adapter_for_job(record)
            group = groups.setdefault(id(adapter), _Group(center.id, adapter, [], []))
            group.jobs.append((i, record))
            if (lease := sending.get(send_lease(record.id))) is not None:
                group.leases.append(lease)
    # The sending goes on even if the client goes away mid-request.
    sends = [service.track(_send_group(service, g)) for g in groups.values()]
    for task in sends:
        for i, item in await asyncio.shield(task):
            items[i] = item
    for i, record, task in alone:
        try:
            items[i] = BatchItem(i, await asyncio.shield(task))
        except Exception as exc:  # logged and FAILED by the submission itself
            items[i] = _refused(i, exc, record)
    return [item for item in items if item is not None]


async def _send_group(service: JobService, group: _Group) -> list[tuple[int, BatchItem]]:
    """Send a group's jobs (already in `in_flight`, their leases acquired) and store each
    outcome; the leases are renewed meanwhile and released after."""
    async with claim_many(service.leases, (), service.lease_ttl, group.leases):
        return await _send_held(service, group)


async def _send_held(service: JobService, group: _Group) -> list[tuple[int, BatchItem]]:
    center = service.centers.get(group.center)
    records = [r for _, r in group.jobs]
    try:
        requests = [to_request(r, center.config.type, []) for r in records]
        # As long as one submission may take, and a little per job.
        async with asyncio.timeout(service.submit_timeout + 0.1 * len(requests)):
            outcomes: list[str | Exception] = await group.adapter.submit_many(requests)
    except Exception as exc:  # TimeoutError, CenterUnavailable: unknown; others: ours
        outcomes = [exc] * len(records)
    finally:
        service.in_flight.difference_update(r.id for r in records)
    out: list[tuple[int, BatchItem]] = []
    sent = [(r, o) for r, o in zip(records, outcomes, strict=True) if isinstance(o, str)]
    if sent:
        service.outcomes.succeeded(center.id)
    # The jobs the center took, stored together (one commit).
    stored = await service.store.update_many([(r.id, sent_fields(o)) for r, o in sent])
    by_id = {r.id: r for r in stored}
    for (i, record), outcome in zip(group.jobs, outcomes, strict=True):
        if isinstance(outcome, str):
            settled = by_id[record.id]
            if settled.cancel_requested:
                await service.cancel_at_center(settled)
            out.append((i, BatchItem(i, settled)))
            continue
        try:
            out.append((i, BatchItem(i, await service.settle(record, center.id, outcome))))
        except Exception as exc:  # logged and FAILED by settle
            out.append((i, _refused(i, exc, record)))
    return out
