"""What finished jobs used and cost: per job when it ends, and summed per user,
center and period for `GET /v1/usage`.

Core-hours are cores held (nodes x tasks per node x cpus per task) times the
hours the job ran; GPU-hours likewise with GPUs per node. Times are the
center's (when its job started and ended running, from the scheduler or the
job's own record); where the center cannot tell, the times the gateway saw
stand in and the job's usage says so (`source: gateway`). A job is billed at
the price its center had when the job was sent there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.jobs.records import ElementRecord, JobRecord, JobUsage, Price

#: Figures are rounded to this many decimals where they are served.
DIGITS = 6


def epoch(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _span(start: datetime | None, end: datetime | None) -> float:
    return max((end - start).total_seconds(), 0.0) if start and end else 0.0


def job_usage(
    record: JobRecord,
    started_at: datetime | None,
    ended_at: datetime | None,
    elements: Sequence[ElementRecord] = (),
) -> JobUsage:
    """The usage of a job that just ended. `started_at`/`ended_at` are the center's
    times (None where it gave none); an array job sums its elements' own spans."""
    res = record.spec.resources
    cores = res.nodes * res.tasks_per_node * res.cpus_per_task
    gpus = res.nodes * res.gpus_per_node
    price = record.price or Price(currency="CNY", core_hour=0.0, gpu_hour=0.0)
    source = "center"
    if elements:
        spans = [_span(e.started_at, e.ended_at) for e in elements]
        if any(e.started_at is None or e.ended_at is None for e in elements if e.native_id):
            source = "gateway"
        wall = sum(spans)
        starts = [e.started_at for e in elements if e.started_at]
        ends = [e.ended_at for e in elements if e.ended_at]
        started_at = min(starts) if starts else started_at
        ended_at = max(ends) if ends else ended_at
    else:
        if started_at is None or ended_at is None:
            # The gateway's own sightings; a job never seen running bills no time.
            source = "gateway"
            started_at = started_at or record.started_at
            ended_at = ended_at or record.finished_at
        wall = _span(started_at, ended_at)
    hours = wall / 3600
    return JobUsage(
        cores=cores,
        gpus=gpus,
        started_at=started_at,
        ended_at=ended_at,
        wall_seconds=round(wall, 3),
        core_hours=round(cores * hours, DIGITS),
        gpu_hours=round(gpus * hours, DIGITS),
        price=price,
        cost=round(cores * hours * price.core_hour + gpus * hours * price.gpu_hour, DIGITS),
        source=source,  # type: ignore[arg-type]
    )


GROUPS = ("user", "center")


def summarize(records: Iterable[JobRecord], group_by: Sequence[str]) -> list[dict[str, Any]]:
    """Sums per group (and per currency: costs in different currencies never add up)."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in records:
        usage = record.usage
        if usage is None:
            continue
        key_fields = {"user": record.owner, "center": record.center}
        key = (*(key_fields[g] for g in group_by), usage.price.currency)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                **{g: key_fields[g] for g in group_by},
                "currency": usage.price.currency,
                "jobs": 0,
                "core_hours": 0.0,
                "gpu_hours": 0.0,
                "cost": 0.0,
            }
        row["jobs"] += 1
        row["core_hours"] += usage.core_hours
        row["gpu_hours"] += usage.gpu_hours
        row["cost"] += usage.cost
    for row in rows.values():
        for name in ("core_hours", "gpu_hours", "cost"):
            row[name] = round(row[name], DIGITS)
    return [rows[k] for k in sorted(rows)]


def job_line(record: JobRecord) -> dict[str, Any]:
    """One job of a usage report."""
    assert record.usage is not None
    return {
        "id": record.id,
        "user": record.owner,
        "center": record.center,
        "state": record.state.value,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        **record.usage.model_dump(mode="json"),
    }
