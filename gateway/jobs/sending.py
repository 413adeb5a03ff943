"""Sending a stored job to its center: the adapter's `JobRequest`, the fields its
record takes once the center has it, and the refusal carried out of the sending."""

from __future__ import annotations

from typing import Any

from adapters.base import JobRequest, JobState
from adapters.registry import center_type
from gateway.errors import DomainError
from gateway.jobs.records import JobRecord
from gateway.units import utcnow

#: The leases of jobs being sent: `send/<job id>`, held by the replica sending it, from
#: before the job is stored (or before it is sent again) until its outcome is stored.
SEND_PREFIX = "send/"


def send_lease(job_id: str) -> str:
    return f"{SEND_PREFIX}{job_id}"


def to_request(
    record: JobRecord, center_type_name: str, dependencies: list[tuple[str, str]]
) -> JobRequest:
    spec = record.spec
    res = spec.resources
    key = center_type(center_type_name).directives_key
    extra = getattr(spec.extra_directives, key, ()) if key else ()
    app = record.application
    return JobRequest(
        gateway_id=record.id,
        name=spec.name,
        script=app.script if app else spec.script,
        command=spec.command,
        arguments=tuple(spec.arguments),
        nodes=res.nodes,
        tasks_per_node=res.tasks_per_node,
        cpus_per_task=res.cpus_per_task,
        gpus_per_node=res.gpus_per_node,
        gpu_type=res.gpu_type,
        memory_per_node_mib=res.memory_per_node,
        walltime_seconds=int(-(-res.walltime // 1)) if res.walltime else None,
        queue=spec.queue,
        account=spec.account,
        environment=dict(spec.environment),
        working_dir=spec.working_dir,
        qos=spec.qos,
        array=spec.array,
        dependencies=tuple(dependencies),
        extra_directives=tuple(extra),
    )


def sent_fields(native_id: str) -> dict[str, Any]:
    """What a job's record takes when its center has it."""
    return {
        "native_id": native_id,
        "state": JobState.QUEUED,
        "native_state": "SUBMITTED",
        "reason": None,
        "submitted_at": utcnow(),
    }


class SubmitRejectedError(Exception):
    """Internal: carries the domain error and the FAILED record out of the shielded
    task that sent the job."""

    def __init__(self, error: DomainError, record: JobRecord) -> None:
        super().__init__(error.message)
        self.error = error
        self.error.context["job_id"] = record.id
        self.record = record
