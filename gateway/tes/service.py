"""GA4GH TES tasks over the gateway's jobs: a task is one job (its id is the task's),
made by `TaskPlan` for the center it goes to, kept with the task's document
(`JobRecord.task`), listed, shown in the three views, and cancelled.

The mapping, field by field, is in docs/tes.md.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from adapters.base import JobState
from adapters.errors import AdapterError
from gateway.apps.render import setup_lines
from gateway.apps.service import AppService, Offer
from gateway.centers.configured import Center, CenterRegistry
from gateway.errors import DomainError, Unprocessable, field_path, validation_error
from gateway.fields import CenterPath
from gateway.jobs.models import PREFERENCES, JobSpec, Resources, StageIn, StageOut
from gateway.jobs.records import JobRecord
from gateway.jobs.service import JobService
from gateway.jobs.store import JobQuery
from gateway.store import job_sql
from gateway.tes.batch import (
    OUTS,
    ROOT,
    SYSTEM_FAILURE,
    Environment,
    ExecutorLog,
    ExecutorRun,
    OutputFile,
    OutputRun,
    TaskLogs,
    TaskRun,
    check_path,
    log_files,
    parse_logs,
    task_script,
)
from gateway.tes.models import TesTask, View, has_wildcard
from gateway.units import utcnow

log = logging.getLogger("hpcfed.tes")

#: backend_parameters this gateway takes (keys are case-insensitive).
BACKEND_PARAMETERS = ("center", "queue", "account", "qos", "walltime", "prefer", "exclude")
#: URL schemes of inputs and outputs.
SCHEMES = ("hpcfed", "file")
#: How much of each executor's stdout and stderr the FULL view holds (the tail).
LOG_TAIL = 64 << 10
#: Page sizes of GET /tasks (the specification: less than 2048, 256 by default).
DEFAULT_PAGE, MAX_PAGE = 256, 2047
#: How many jobs each read of the store takes while a page of tasks is filled.
LIST_CHUNK = 1 << 9
#: The job name of a task: its name's safe characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def bad(field_name: str, message: str) -> Unprocessable:
    return Unprocessable("invalid_request", f"{field_name}: {message}", field_name)


# ------------------------------------------------------------------ URLs


class Location(NamedTuple):
    """Where an input comes from or an output goes: `hpcfed://<center>/<path>` names a
    center, `file://<path>` (or a bare absolute path) the task's own center."""

    center: str | None
    path: str


def location(url: str, field_name: str) -> Location:
    if url.startswith("/"):
        return Location(None, url)
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise bad(
            field_name,
            f"scheme {parts.scheme or '(none)'!r} is not supported; use hpcfed://<center>/<path> "
            "or file:///<path> (at the task's center)",
        )
    path = unquote(parts.path)
    if parts.query or parts.fragment:
        raise bad(field_name, "a URL with a query or fragment names no file")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise bad(field_name, "file:// URLs name a path at the task's center: file:///<path>")
        if not path.startswith("/"):
            raise bad(field_name, "file:// URLs need an absolute path")
        return Location(None, path)
    if not parts.netloc:
        raise bad(field_name, "hpcfed:// URLs name a center: hpcfed://<center>/<path>")
    if path == "/~" or path.startswith("/~/"):
        # hpcfed://c/~/x: x in the login's first root there (its home)
        path = path[3:]
    if path.strip("/") == "":
        raise bad(field_name, "the URL names no file")
    return Location(parts.netloc, path)


# ------------------------------------------------------------------ the plan


def _app_name(image: str) -> tuple[str, str | None]:
    for sep in (":", "/"):
        if sep in image:
            name, _, version = image.partition(sep)
            return name, version
    return image, None


@dataclass
class TaskPlan:
    """A task's job as each center would run it (gateway.jobs.service.CenterPlan)."""

    task: TesTask
    #: image -> center -> the catalog's offers of it there, for images naming applications.
    apps: dict[str, dict[str, list[Offer]]] = field(default_factory=dict)

    def environments(self, center: Center) -> list[Environment] | list[str]:
        """Each executor's environment at `center`, or why some have none there."""
        tes = center.config.tes
        found: list[Environment] = []
        refused: list[str] = []
        for i, ex in enumerate(self.task.executors):
            where = field_path("executors", i, "image")
            if tes.runtime != "none":
                found.append(Environment(ex.image))
                continue
            host = tes.image(ex.image)
            if host is not None:
                found.append(Environment(ex.image, tuple(setup_lines(center.config, host))))
                continue
            offer = self._offer(ex.image, center)
            if offer is not None:
                lines = setup_lines(center.config, offer.binding)
                found.append(Environment(ex.image, tuple(lines)))
                continue
            refused.append(
                f"{where}: {ex.image!r} is neither an image center {center.id} publishes "
                "(it has no container runtime) nor an application it offers"
            )
        return refused or found

    def _offer(self, image: str, center: Center) -> Offer | None:
        name, version = _app_name(image)
        for offer in self.apps.get(name, {}).get(center.id, []):
            if offer.state != "failed" and version in (None, offer.binding.version):
                return offer
        return None

    def check_images(self, centers: list[Center]) -> None:
        """Refuse (naming `executors[N].image`) an image that no center of `centers` can
        run: the task would never run anywhere."""
        for i, ex in enumerate(self.task.executors):
            single = TaskPlan(self.task.model_copy(update={"executors": [ex]}), self.apps)
            if not any(single.refusal(c) is None for c in centers):
                where = field_path("executors", i, "image")
                raise Unprocessable(
                    "unsupported_image",
                    f"{where}: {ex.image!r} is neither an image a center of yours publishes "
                    "nor an application one offers, and none of them runs containers",
                    where,
                )

    def refusal(self, center: Center) -> list[str] | None:
        found = self.environments(center)
        return [w for w in found if isinstance(w, str)] or None

    def render(self, center: Center, spec: JobSpec) -> JobSpec:
        found = self.environments(center)
        refused = [w for w in found if isinstance(w, str)]
        if refused:
            first = refused[0]
            raise Unprocessable("unsupported_image", first, first.split(":", 1)[0])
        envs = [e for e in found if isinstance(e, Environment)]
        task = self.task
        _check_paths(task)
        tes = center.config.tes
        if tes.runtime == "none" and tes.sandbox == "bubblewrap":
            _files_below_top(task)
        contents: list[tuple[str, str]] = []
        host_inputs: list[tuple[str, str]] = []
        staged: list[str] = []
        inputs: list[StageIn] = []
        for i, given in enumerate(task.inputs or []):
            if given.content:
                contents.append((given.path, given.content))
                continue
            assert given.url is not None  # TesInput: url or content
            where = location(given.url, field_path("inputs", i, "url"))
            if where.center is None:
                host_inputs.append((where.path, given.path))
                continue
            staged.append(given.path)
            inputs.append(
                StageIn(
                    destination=ROOT + given.path,
                    source=CenterPath(center=where.center, path=where.path),
                )
            )
        outputs: list[StageOut] = []
        runs: list[OutputRun] = []
        for i, out in enumerate(task.outputs or []):
            where = location(out.url, field_path("outputs", i, "url"))
            wild = has_wildcard(out.path)
            runs.append(OutputRun(i, out.path, out.path_prefix, out.type == "DIRECTORY"))
            outputs.append(
                StageOut(
                    source=f"{OUTS}/{i}" if wild else ROOT + out.path,
                    destination=CenterPath(center=where.center or center.id, path=where.path),
                )
            )
        run = TaskRun(
            executors=tuple(
                ExecutorRun(
                    argv=tuple(ex.command),
                    environment=env,
                    workdir=ex.workdir,
                    stdin=ex.stdin,
                    stdout=ex.stdout,
                    stderr=ex.stderr,
                    env=tuple((ex.env or {}).items()),
                    ignore_error=bool(ex.ignore_error),
                )
                for ex, env in zip(task.executors, envs, strict=True)
            ),
            contents=tuple(contents),
            host_inputs=tuple(host_inputs),
            staged=tuple(staged),
            outputs=tuple(runs),
            volumes=tuple(task.volumes or ()),
            runtime=center.config.tes.runtime,
            sandbox=center.config.tes.sandbox,
            command=center.config.tes.command,
        )
        try:
            script = task_script(run)
        except ValueError as exc:  # the script's own rules (each message names its field)
            where = str(exc).split(":", 1)[0]
            raise Unprocessable("invalid_request", str(exc), where) from None
        return spec.model_copy(
            update={"script": "#!/bin/bash\n" + script, "inputs": inputs, "outputs": outputs}
        )


def _check_paths(task: TesTask) -> None:
    """Each path of the task as the batch script takes it (batch.check_path), a refusal
    naming the task's own field."""
    named: list[tuple[str, str | None]] = []
    named += [(field_path("inputs", i, "path"), x.path) for i, x in enumerate(task.inputs or [])]
    named += [(field_path("outputs", i, "path"), x.path) for i, x in enumerate(task.outputs or [])]
    named += [(field_path("volumes", i), v) for i, v in enumerate(task.volumes or [])]
    for i, ex in enumerate(task.executors):
        for key in ("workdir", "stdin", "stdout", "stderr"):
            named.append((field_path("executors", i, key), getattr(ex, key)))
    for where, path in named:
        if path is not None:
            try:
                check_path(path, where)
            except ValueError as exc:
                raise bad(where, str(exc).removeprefix(f"{where}: ")) from None


def _files_below_top(task: TesTask) -> None:
    """Under bubblewrap a task's top-level directories are its own, and a file directly
    under `/` is in none of them: refuse one, naming its field."""
    named: list[tuple[str, str | None]] = []
    for i, given in enumerate(task.inputs or []):
        if given.type == "FILE":
            named.append((field_path("inputs", i, "path"), given.path))
    for i, out in enumerate(task.outputs or []):
        if out.type == "FILE" and not has_wildcard(out.path):
            named.append((field_path("outputs", i, "path"), out.path))
    for i, ex in enumerate(task.executors):
        for key in ("stdin", "stdout", "stderr"):
            named.append((field_path("executors", i, key), getattr(ex, key)))
    for where, path in named:
        if path is not None and path.count("/") == 1:
            raise bad(where, f"{path!r}: a file directly under '/'; put it in a directory")


# ------------------------------------------------------------------ the job spec


def _walltime(value: str, field_name: str) -> Any:
    try:
        return Resources.model_validate({"walltime": value}).walltime
    except ValidationError:
        raise bad(field_name, f"{value!r} is not a duration ('01:30:00', '90m')") from None


def job_spec(task: TesTask) -> tuple[JobSpec, list[str]]:
    """The job of a task before its center is known, and the warnings for the task's
    system log (backend parameters this gateway does not take)."""
    res = task.resources
    params = {k.lower(): v for k, v in ((res.backend_parameters or {}) if res else {}).items()}
    where = "resources.backend_parameters"
    unknown = sorted(set(params) - set(BACKEND_PARAMETERS))
    warnings: list[str] = []
    if unknown and res is not None and res.backend_parameters_strict:
        raise bad(
            field_path(where, unknown[0]),
            f"not supported here (supported: {', '.join(BACKEND_PARAMETERS)})",
        )
    for key in unknown:
        warnings.append(f"{where}.{key}: not supported here; ignored")
        del params[key]
    resources: dict[str, Any] = {}
    if res is not None and res.cpu_cores:
        resources["cpus_per_task"] = res.cpu_cores
    if res is not None and res.ram_gb:
        # GB as the specification says (10^9 bytes), in MiB, rounded up.
        resources["memory_per_node"] = max(1, math.ceil(res.ram_gb * 1e9 / (1 << 20)))
    if "walltime" in params:
        resources["walltime"] = _walltime(params["walltime"], field_path(where, "walltime"))
    placement: dict[str, Any] = {}
    if res is not None and res.zones:
        placement["regions"] = list(res.zones)
    if "prefer" in params:
        prefer = [p.strip() for p in params["prefer"].split(",") if p.strip()]
        for p in prefer:
            if p not in PREFERENCES:
                raise bad(field_path(where, "prefer"), f"{p!r}: one of {', '.join(PREFERENCES)}")
        placement["prefer"] = prefer
    if "exclude" in params:
        placement["exclude"] = [c.strip() for c in params["exclude"].split(",") if c.strip()]
    name = _UNSAFE.sub("-", task.name or "task").strip("-._")[:58] or "task"
    doc: dict[str, Any] = {
        "name": f"tes-{name}",
        "script": "#!/bin/bash\n",  # written for its center by TaskPlan.render
        "resources": resources,
        "center": params.get("center", "auto"),
    }
    for key in ("queue", "account", "qos"):
        if key in params:
            doc[key] = params[key]
    if placement:
        doc["placement"] = placement
    try:
        spec = JobSpec.model_validate(doc)
    except ValidationError as exc:
        error = validation_error(exc)
        named = error.field or "(body)"
        for key in ("queue", "account", "qos", "center"):
            if named == key:
                named = field_path(where, key)
        raise bad(named, error.message.split(": ", 1)[-1]) from None
    return spec, warnings


def kept_document(task: TesTask) -> dict[str, Any]:
    """The task as the gateway keeps and returns it: without the backend parameters it
    does not take (the specification: not stored, not returned)."""
    document = task.document()
    params = (document.get("resources") or {}).get("backend_parameters")
    if params:
        document["resources"]["backend_parameters"] = {
            k: v for k, v in params.items() if k.lower() in BACKEND_PARAMETERS
        }
    return document


# ------------------------------------------------------------------ states and views


def tes_state(record: JobRecord, logs: TaskLogs | None) -> str:
    state = record.state
    if state is JobState.COMPLETED:
        return "COMPLETE"
    if state is JobState.CANCELLED:
        return "CANCELED"
    if state is JobState.FAILED:
        if logs is not None:
            return "EXECUTOR_ERROR" if logs.failed_executor is not None else "SYSTEM_ERROR"
        # The logs not read back yet (the center out of reach): the job's exit code is
        # the stopping executor's, or the script's own for a failure of its setup.
        code = record.exit_code
        return "EXECUTOR_ERROR" if code not in (None, 0, SYSTEM_FAILURE) else "SYSTEM_ERROR"
    if state is JobState.TIMEOUT:
        return "SYSTEM_ERROR"
    if record.cancel_requested:
        return "CANCELING"
    if state is JobState.SUBMITTING:
        return "INITIALIZING"
    if state in (JobState.QUEUED, JobState.HELD):
        return "QUEUED"
    if state is JobState.RUNNING:
        return "RUNNING"
    if state is JobState.SUSPENDED:
        return "PAUSED"
    return "UNKNOWN"


#: The job states a TES state can come from (for `GET /tasks?state=`).
JOB_STATES: dict[str, tuple[JobState, ...]] = {
    "COMPLETE": (JobState.COMPLETED,),
    "CANCELED": (JobState.CANCELLED,),
    "EXECUTOR_ERROR": (JobState.FAILED,),
    "SYSTEM_ERROR": (JobState.FAILED, JobState.TIMEOUT),
    "INITIALIZING": (JobState.SUBMITTING,),
    "QUEUED": (JobState.QUEUED, JobState.HELD),
    "RUNNING": (JobState.RUNNING,),
    "PAUSED": (JobState.SUSPENDED,),
    "UNKNOWN": (JobState.UNKNOWN,),
    "CANCELING": tuple(s for s in JobState if not s.is_terminal),
    "PREEMPTED": (),
}


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _stored_logs(record: JobRecord) -> TaskLogs | None:
    kept = (record.task or {}).get("logs")
    return _logs_from(kept) if kept is not None else None


def _logs_from(kept: dict[str, Any]) -> TaskLogs:
    def when(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text) if text else None

    return TaskLogs(
        executors=tuple(
            ExecutorLog(
                exit_code=e["exit_code"],
                start_time=when(e["start_time"]),
                end_time=when(e["end_time"]),
                stdout=e["stdout"],
                stderr=e["stderr"],
            )
            for e in kept["executors"]
        ),
        outputs=tuple(OutputFile(**o) for o in kept["outputs"]),
        system=tuple(kept["system"]),
    )


def _logs_doc(logs: TaskLogs) -> dict[str, Any]:
    return {
        "executors": [
            {
                "exit_code": e.exit_code,
                "start_time": _time(e.start_time),
                "end_time": _time(e.end_time),
                "stdout": e.stdout,
                "stderr": e.stderr,
            }
            for e in logs.executors
        ],
        "outputs": [
            {"index": o.index, "path": o.path, "stored": o.stored, "size": o.size}
            for o in logs.outputs
        ],
        "system": list(logs.system),
    }


def _output_logs(record: JobRecord, logs: TaskLogs | None, doc: dict[str, Any]) -> list[Any]:
    """One entry per file an output put at its URL, once the job's outputs are collected."""
    if logs is None or not record.staging.collected:
        return []
    outputs = doc.get("outputs") or []
    staged = {s.index: s for s in record.staging.outputs}
    found: list[dict[str, str]] = []
    for f in logs.outputs:
        if f.index >= len(outputs) or getattr(staged.get(f.index), "state", None) != "done":
            continue
        out = outputs[f.index]
        url = out["url"]
        if has_wildcard(out["path"]):
            rel = f.path[len(out["path_prefix"]) :].lstrip("/")
            url = url.rstrip("/") + "/" + rel
        elif f.path != out["path"]:  # a file inside a DIRECTORY output
            url = url.rstrip("/") + f.path[len(out["path"]) :]
        found.append({"url": url, "path": f.path, "size_bytes": str(f.size)})
    return found


def task_view(record: JobRecord, view: View) -> dict[str, Any]:
    """The task as `GET /tasks/{id}` shows it in `view`."""
    logs = _stored_logs(record)
    state = tes_state(record, logs)
    if view == "MINIMAL":
        return {"id": record.id, "state": state}
    doc: dict[str, Any] = dict((record.task or {}).get("document") or {})
    full = view == "FULL"
    if not full and doc.get("inputs"):
        doc["inputs"] = [{k: v for k, v in i.items() if k != "content"} for i in doc["inputs"]]
    metadata = {"center": record.center, "hpcfed_job": record.id}
    if record.native_id:
        metadata["native_id"] = record.native_id
    task_log: dict[str, Any] = {
        "logs": [],
        "metadata": metadata,
        "outputs": _output_logs(record, logs, doc),
    }
    if record.started_at is not None:
        task_log["start_time"] = _time(record.started_at)
    if record.finished_at is not None and record.state.is_terminal:
        task_log["end_time"] = _time(record.finished_at)
    for e in logs.executors if logs is not None else ():
        entry: dict[str, Any] = {"exit_code": e.exit_code if e.exit_code is not None else -1}
        if e.start_time is not None:
            entry["start_time"] = _time(e.start_time)
        if e.end_time is not None:
            entry["end_time"] = _time(e.end_time)
        if full:
            entry["stdout"], entry["stderr"] = e.stdout, e.stderr
        task_log["logs"].append(entry)
    if full:
        system = list((record.task or {}).get("warnings") or [])
        if record.reason:
            system.append(f"{record.state.value}: {record.reason}")
        if logs is not None:
            system.extend(logs.system)
        task_log["system_logs"] = system
    created = (record.task or {}).get("creation_time") or _time(record.created_at)
    return {
        "id": record.id,
        "state": state,
        **doc,
        "logs": [task_log],
        "creation_time": created,
    }


# ------------------------------------------------------------------ the service


@dataclass(frozen=True)
class TaskQuery:
    owner: str
    name_prefix: str | None = None
    state: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    page_size: int = DEFAULT_PAGE
    page_token: str | None = None
    view: View = "MINIMAL"


def _matches(record: JobRecord, query: TaskQuery, state: str) -> bool:
    doc = (record.task or {}).get("document") or {}
    if query.name_prefix and not str(doc.get("name", "")).startswith(query.name_prefix):
        return False
    if query.state is not None and state != query.state:
        return False
    tags = doc.get("tags") or {}
    for key, value in query.tags.items():
        if key not in tags or (value != "" and tags[key] != value):
            return False
    return True


class TesService:
    def __init__(self, jobs: JobService, centers: CenterRegistry, apps: AppService | None) -> None:
        self.jobs = jobs
        self.centers = centers
        self.apps = apps

    def backend_parameters(self) -> list[str]:
        return list(BACKEND_PARAMETERS)

    def storage(self) -> list[str]:
        return [f"hpcfed://{c.id}/" for c in self.centers]

    async def create(self, owner: str, body: Any) -> str:
        if not isinstance(body, dict):
            raise Unprocessable("invalid_request", "(body): a tesTask object", "(body)")
        try:
            task = TesTask.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        for i, given in enumerate(task.inputs or []):
            if not given.content:
                assert given.url is not None
                where = location(given.url, field_path("inputs", i, "url"))
                if where.center is not None:
                    self.centers.get(where.center)  # unknown_center names it
        for i, out in enumerate(task.outputs or []):
            where = location(out.url, field_path("outputs", i, "url"))
            if where.center is not None:
                self.centers.get(where.center)
        spec, warnings = job_spec(task)
        plan = TaskPlan(task, await self._app_offers(task))
        if spec.center == "auto":
            plan.check_images([c for c in self.centers if c.serves(owner)])
        document = kept_document(task)
        kept = {
            "document": document,
            "warnings": warnings,
            "logs": None,
            "creation_time": utcnow().isoformat(),
        }
        outcome = await self.jobs.submit(owner, spec, plan=plan, task=kept)
        for warning in warnings:
            log.info("task %s: %s", outcome.record.id, warning)
        return outcome.record.id

    async def _app_offers(self, task: TesTask) -> dict[str, dict[str, list[Offer]]]:
        """The catalog's offers of each executor image that names one of its applications."""
        if self.apps is None:
            return {}
        known = set(await self.apps.definitions())
        found: dict[str, dict[str, list[Offer]]] = {}
        for ex in task.executors:
            name, _ = _app_name(ex.image)
            if name in known and name not in found:
                found[name] = await self.apps.offers(name)
        return found

    async def _record(self, owner: str, task_id: str) -> JobRecord:
        try:
            record = await self.jobs.get(owner, task_id)
        except DomainError as exc:
            if exc.code in ("not_found", "invalid_request"):
                raise DomainError("not_found", f"id: no task {task_id!r}", "id") from None
            raise
        if record.task is None:
            raise DomainError("not_found", f"id: no task {task_id!r}", "id")
        return await self._with_logs(record)

    async def _with_logs(self, record: JobRecord) -> JobRecord:
        """The record, with its executors' logs read back once the job has ended."""
        if not record.state.is_terminal or record.task is None or record.task.get("logs"):
            return record
        if record.native_id is None:
            return record  # never reached its center: nothing ran
        count = len(record.task["document"]["executors"])
        try:
            files = await self.jobs.staging.read_back(record, log_files(count), LOG_TAIL)
        except (AdapterError, DomainError) as exc:
            log.warning("task %s: logs not read back now: %s", record.id, exc)
            return record
        logs = parse_logs(files, LOG_TAIL)
        task = {**record.task, "logs": _logs_doc(logs)}
        return await self.jobs.store.update(record.id, task=task)

    async def get(self, owner: str, task_id: str, view: View) -> dict[str, Any]:
        return task_view(await self._record(owner, task_id), view)

    async def cancel(self, owner: str, task_id: str) -> None:
        record = await self._record(owner, task_id)
        await self.jobs.cancel(owner, record.id)

    async def list(self, query: TaskQuery) -> dict[str, Any]:
        """A page of the owner's tasks, newest first; the next page starts after the last
        task of this one (its token is that task's place in the order)."""
        if query.state == "PREEMPTED":
            return {"tasks": []}  # no center of this gateway preempts a job of its own
        cursor = _cursor(query.page_token) if query.page_token else None
        states = JOB_STATES.get(query.state, ()) if query.state else ()
        tasks: list[dict[str, Any]] = []
        last: JobRecord | None = None
        while len(tasks) < query.page_size:
            page = await self.jobs.list(
                JobQuery(
                    owner=query.owner,
                    states=states,
                    limit=min(LIST_CHUNK, query.page_size * 2),
                    cursor=cursor,
                    tasks_only=True,
                )
            )
            for record in page.jobs:
                record = await self._with_logs(record)
                view = task_view(record, query.view)
                if _matches(record, query, view["state"]):
                    tasks.append(view)
                    last = record
                    if len(tasks) == query.page_size:
                        break
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        answer: dict[str, Any] = {"tasks": tasks}
        if last is not None and len(tasks) == query.page_size:
            answer["next_page_token"] = _token(last)
        return answer


def _token(record: JobRecord) -> str:
    return job_sql.encode_cursor(record.created_at.isoformat(), record.id)


def _cursor(token: str) -> str:
    """A page token as the job store's cursor (the same form)."""
    try:
        job_sql.decode_cursor(token)
    except Exception:
        raise bad("page_token", "not a token this server gave") from None
    return token
