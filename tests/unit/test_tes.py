"""The GA4GH TES mapping without a center: task validation, URLs, the job spec a task
becomes, the images a center can run, states and views."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.base import JobState
from gateway.errors import Unprocessable
from gateway.jobs.records import JobRecord, StagedFile, Staging
from gateway.tes.batch import ExecutorLog, OutputFile, TaskLogs, stop_line
from gateway.tes.models import TesTask
from gateway.tes.service import (
    _logs_doc,
    job_spec,
    kept_document,
    location,
    task_view,
    tes_state,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _task(**extra: Any) -> TesTask:
    return TesTask.model_validate(
        {"executors": [{"image": "debian:12", "command": ["true"]}], **extra}
    )


def _record(state: JobState = JobState.COMPLETED, **task: Any) -> JobRecord:
    spec, _ = job_spec(_task())
    return JobRecord(
        id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
        owner="alice",
        center="centera",
        spec=spec,
        state=state,
        created_at=NOW,
        updated_at=NOW,
        task={"document": _task(**task).document(), "logs": None, "warnings": []},
    )


def test_paths_must_be_absolute_and_not_climb() -> None:
    for path in ("rel/x", "/data/../etc/passwd", "/"):
        with pytest.raises(ValidationError):
            _task(inputs=[{"path": path, "content": "x"}])
    assert _task(inputs=[{"path": "/data//x/./y", "content": "x"}]).inputs[0].path == "/data/x/y"


def test_an_input_needs_a_url_or_content_and_an_output_with_wildcards_a_prefix() -> None:
    with pytest.raises(ValidationError, match="'url' or 'content'"):
        _task(inputs=[{"path": "/x"}])
    with pytest.raises(ValidationError, match="path_prefix"):
        _task(outputs=[{"path": "/out/*.txt", "url": "hpcfed://centera/~/o/"}])
    ok = _task(outputs=[{"path": "/out/*.txt", "path_prefix": "/out/", "url": "hpcfed://c/~/o"}])
    assert ok.outputs and ok.outputs[0].path_prefix == "/out/"


def test_server_fields_a_client_sends_back_are_ignored_and_unknown_ones_refused() -> None:
    task = _task(id="x", state="QUEUED", logs=[], creation_time="2020-01-01T00:00:00Z")
    assert set(task.document()) == {"executors"}
    with pytest.raises(ValidationError, match="Extra inputs"):
        _task(priority=3)


def test_urls_name_a_center_or_the_tasks_own() -> None:
    assert location("hpcfed://centera/home/alice/x", "f") == ("centera", "/home/alice/x")
    assert location("hpcfed://centerc/~/in/x.txt", "f") == ("centerc", "in/x.txt")
    assert location("file:///scratch/x", "f") == (None, "/scratch/x")
    assert location("/scratch/x", "f") == (None, "/scratch/x")
    for url in ("s3://bucket/x", "https://example.org/x", "file://host/x", "hpcfed:///x"):
        with pytest.raises(Unprocessable) as raised:
            location(url, "inputs[0].url")
        assert raised.value.field == "inputs[0].url"


def test_resources_and_backend_parameters_become_the_job_spec() -> None:
    spec, warnings = job_spec(
        _task(
            name="align sample 7/x",
            resources={
                "cpu_cores": 4,
                "ram_gb": 8,
                "zones": ["north"],
                "backend_parameters": {
                    "Center": "centerc",
                    "QUEUE": "batch",
                    "walltime": "90m",
                    "prefer": "greenest,cheapest",
                    "VmSize": "Standard_D64_v3",
                },
            },
        )
    )
    assert spec.name == "tes-align-sample-7-x"
    assert spec.center == "centerc" and spec.queue == "batch"
    assert spec.resources.cpus_per_task == 4
    assert spec.resources.memory_per_node == 7630  # 8e9 bytes in MiB, rounded up
    assert spec.resources.walltime == 5400
    assert spec.placement is not None
    assert spec.placement.regions == ["north"]
    assert spec.placement.prefer == ["greenest", "cheapest"]
    assert warnings == ["resources.backend_parameters.vmsize: not supported here; ignored"]


def test_strict_backend_parameters_refuse_an_unknown_key_and_bad_values_name_theirs() -> None:
    with pytest.raises(Unprocessable) as raised:
        job_spec(
            _task(resources={"backend_parameters": {"gpu": "2"}, "backend_parameters_strict": True})
        )
    assert raised.value.field == "resources.backend_parameters.gpu"
    for key, value in (("walltime", "soon"), ("prefer", "fast"), ("queue", "bad queue")):
        with pytest.raises(Unprocessable) as raised:
            job_spec(_task(resources={"backend_parameters": {key: value}}))
        assert raised.value.field == f"resources.backend_parameters.{key}"


@pytest.mark.parametrize(
    ("state", "cancel", "failed_executor", "expected"),
    [
        (JobState.SUBMITTING, False, None, "INITIALIZING"),
        (JobState.QUEUED, False, None, "QUEUED"),
        (JobState.HELD, False, None, "QUEUED"),
        (JobState.RUNNING, False, None, "RUNNING"),
        (JobState.RUNNING, True, None, "CANCELING"),
        (JobState.SUSPENDED, False, None, "PAUSED"),
        (JobState.COMPLETED, False, None, "COMPLETE"),
        (JobState.FAILED, False, 0, "EXECUTOR_ERROR"),
        (JobState.FAILED, False, None, "SYSTEM_ERROR"),
        (JobState.TIMEOUT, False, None, "SYSTEM_ERROR"),
        (JobState.CANCELLED, True, None, "CANCELED"),
        (JobState.UNKNOWN, False, None, "UNKNOWN"),
    ],
)
def test_states(state: JobState, cancel: bool, failed_executor: int | None, expected: str) -> None:
    record = _record(state)
    record.cancel_requested = cancel
    code = 2 if failed_executor is not None else 0
    stopped = (stop_line(0, code),) if failed_executor is not None else ()
    logs = TaskLogs(executors=(ExecutorLog(code, NOW, NOW, "", ""),), outputs=(), system=stopped)
    assert (logs.failed_executor is not None) == (failed_executor is not None)
    assert tes_state(record, logs) == expected


def test_views_leave_out_what_the_specification_says() -> None:
    record = _record(
        inputs=[{"path": "/in", "content": "secret-ish"}],
        outputs=[{"path": "/out/*.txt", "path_prefix": "/out/", "url": "hpcfed://centera/~/o"}],
        tags={"k": "v"},
    )
    logs = TaskLogs(
        executors=(ExecutorLog(0, NOW, NOW, "said\n", "warned\n"),),
        outputs=(OutputFile(0, "/out/a/b.txt", "tes/out/0/a/b.txt", 12),),
        system=(),
    )
    assert record.task is not None
    record.task["logs"] = _logs_doc(logs)
    record.staging = Staging(outputs=[StagedFile(index=0, state="done")], collected=True)
    assert task_view(record, "MINIMAL") == {"id": record.id, "state": "COMPLETE"}
    basic = task_view(record, "BASIC")
    assert "content" not in basic["inputs"][0] and basic["tags"] == {"k": "v"}
    assert "stdout" not in basic["logs"][0]["logs"][0] and "system_logs" not in basic["logs"][0]
    full = task_view(record, "FULL")
    assert full["inputs"][0]["content"] == "secret-ish"
    (log,) = full["logs"]
    assert log["logs"][0]["stdout"] == "said\n" and log["logs"][0]["exit_code"] == 0
    assert log["outputs"] == [
        {"url": "hpcfed://centera/~/o/a/b.txt", "path": "/out/a/b.txt", "size_bytes": "12"}
    ]
    assert full["creation_time"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [(3, "EXECUTOR_ERROR"), (70, "SYSTEM_ERROR"), (0, "SYSTEM_ERROR"), (None, "SYSTEM_ERROR")],
)
def test_a_failed_job_whose_logs_are_not_read_yet_goes_by_its_exit_code(
    code: int | None, expected: str
) -> None:
    record = _record(JobState.FAILED)
    record.exit_code = code
    assert tes_state(record, None) == expected


def test_unsupported_backend_parameters_are_neither_kept_nor_returned() -> None:
    task = _task(resources={"backend_parameters": {"Queue": "batch", "VmSize": "big"}})
    assert kept_document(task)["resources"]["backend_parameters"] == {"Queue": "batch"}
