"""Staging a job's files: inputs in place before it is submitted, outputs collected
after it ends.

Inputs land in the job's working directory (its `working_dir`, or its own job
directory at the center), which the job's login may write to besides its
roots. A `source` input is copied from any center (`gateway.data.copying`, verified
by sha256); an `upload` input waits for the client's PUT. Each input's outcome
is kept in the record (`staging.inputs`), so a retried submission copies only
what is missing.

Outputs are checksummed at the job's center once the job ends, and copied
where their `destination` says. Until that is done the job keeps a running
state with the reason "staging outputs"; then it takes the state the center
reported, or FAILED if a completed job's output could not be collected. Among
replicas, outputs are collected by the one holding the job's lease
`stageout/<id>`, and the job's final state is written only while it still does.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from collections import defaultdict

from adapters.base import TERMINAL_STATES, JobState
from adapters.errors import AdapterError, CenterUnavailable, FileNotFound
from adapters.files.access import CenterFiles
from adapters.files.paths import PathRefused
from gateway.centers.configured import CenterRegistry
from gateway.centers.ownership import DEFAULT_TTL
from gateway.data.copying import copy_tree
from gateway.errors import DomainError, Unprocessable, path_error
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord, StagedFile, Staging
from gateway.jobs.store import JobStore
from gateway.store.contract import StoreError
from gateway.store.leases import Lease, LeaseLost, Leases, LocalLeases, claim
from gateway.units import utcnow

log = logging.getLogger("hpcfed.staging")

STAGING_OUTPUTS = "staging outputs"
#: The lease of a job's output collection: `stageout/<job id>`.
STAGEOUT_PREFIX = "stageout/"


def waits_for_upload(record: JobRecord) -> bool:
    """Whether the job waits for the client to upload an input (its upload sends it on)."""
    return any(s.state == "waiting_upload" for s in record.staging.inputs)


class StagingFailed(Exception):
    """Staging cannot succeed as specified; the message names the input or output."""


def _at(workdir: str, path: str) -> str:
    return path if path.startswith("/") else posixpath.join(workdir, path)


def _why(exc: Exception) -> str:
    if isinstance(exc, DomainError | AdapterError | PathRefused):
        return exc.message
    return str(exc)


class Stager:
    def __init__(
        self,
        store: JobStore,
        centers: CenterRegistry,
        leases: Leases | None = None,
        lease_ttl: float = DEFAULT_TTL,
    ) -> None:
        self.store = store
        self.centers = centers
        self.leases = leases if leases is not None else LocalLeases()
        self.lease_ttl = lease_ttl
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._collecting: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        for task in list(self._collecting.values()):
            task.cancel()

    async def _view(self, record: JobRecord) -> tuple[CenterFiles, str]:
        """The job login's files at its center, and the job's working directory.

        The job's own directory (no `working_dir`) is a root of the view besides the
        login's roots. A `working_dir` must lie within those roots (PathRefused,
        field `working_dir`, if not): naming a directory never widens what staging
        may read or write."""
        center = self.centers.get(record.center)
        workdir = await center.adapter_for_job(record).job_workdir(
            record.id, record.spec.working_dir
        )
        files = center.files_for_job(record)
        if record.spec.working_dir:
            await files.resolve(workdir, "working_dir")
            return files, workdir
        return await files.with_root(workdir), workdir

    async def check_workdir(self, record: JobRecord) -> None:
        """Refuse, before anything is stored, a job that stages files into or out of a
        `working_dir` outside the owner's roots at its center (`path_outside_roots`,
        field `working_dir`). A job without inputs or outputs may run anywhere its login may."""
        spec = record.spec
        if not spec.working_dir or not (spec.inputs or spec.outputs):
            return
        try:
            await self._view(record)
        except PathRefused as exc:
            if exc.outside or "outside your roots" in exc.message:
                raise DomainError("path_outside_roots", exc.message, "working_dir") from None
            raise path_error(exc) from None

    async def _destination(self, record: JobRecord, center: str, path: str) -> CenterFiles:
        """The owner's files at an output's destination center, the directory the output
        goes into made first (within the owner's roots there)."""
        dst = self.centers.get(center).files_for(record.owner)
        parent = posixpath.dirname(path.rstrip("/"))
        if parent and parent not in ("/", "~"):
            await dst.mkdir(parent, parents=True)
        return dst

    async def read_back(
        self, record: JobRecord, paths: list[str], tail: int
    ) -> dict[str, bytes | None]:
        """The last `tail` bytes of each of the job's files (`paths`, relative to its
        working directory); None for one that is not there."""
        files, workdir = await self._view(record)
        found: dict[str, bytes | None] = {}
        for rel in paths:
            try:
                full, entry = await files.open_read(_at(workdir, rel))
            except FileNotFound:
                found[rel] = None
                continue
            offset = max(0, entry.size - tail)
            found[rel] = b"".join([c async for c in files.read(full, offset, entry.size - offset)])
        return found

    async def _save(self, job_id: str, which: str, index: int, item: StagedFile) -> JobRecord:
        """Record one input's or output's outcome without losing a concurrent one's."""
        async with self._locks[job_id]:
            current = await self.store.get(job_id)
            assert current is not None
            staging = current.staging.model_copy(deep=True)
            items: list[StagedFile] = getattr(staging, which)
            while len(items) <= index:
                items.append(StagedFile(index=len(items)))
            items[index] = item
            return await self.store.update(job_id, staging=staging)

    # ------------------------------------------------------------ inputs

    def check(self, spec: JobSpec, owner: str) -> None:
        """Refuse, before anything is stored, staging from or to a center the owner
        cannot use."""
        places = [(f"inputs[{i}].source", s.source) for i, s in enumerate(spec.inputs)]
        places += [(f"outputs[{i}].destination", s.destination) for i, s in enumerate(spec.outputs)]
        for field, place in places:
            if place is None:
                continue
            center = self.centers.find(place.center)
            if center is None:
                raise Unprocessable(
                    "unknown_center",
                    f"{field}.center: no center named {place.center!r}",
                    f"{field}.center",
                )
            if not center.serves(owner):
                raise DomainError(
                    "no_identity_at_center",
                    f"{field}.center: user {owner} has no login at center {center.id}",
                    f"{field}.center",
                    center=center.id,
                )

    def initial(self, record: JobRecord) -> Staging:
        return Staging(
            inputs=[
                StagedFile(index=i, state="waiting_upload" if inp.upload else "pending")
                for i, inp in enumerate(record.spec.inputs)
            ],
            collected=not record.spec.outputs,
        )

    async def stage_in(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Put the inputs in place; (record, whether all are there). Raises StagingFailed."""
        try:
            dst, workdir = await self._view(record)
            await dst.mkdir(workdir, parents=True)
        except CenterUnavailable:
            raise
        except (AdapterError, DomainError, PathRefused) as exc:
            raise StagingFailed(f"staging: the working directory: {_why(exc)}") from None
        done = {s.index for s in record.staging.inputs if s.state == "done"}
        for i, inp in enumerate(record.spec.inputs):
            if i in done or inp.upload:
                continue
            assert inp.source is not None
            target = _at(workdir, inp.destination)
            try:
                src = self.centers.get(inp.source.center).files_for(record.owner)
                parent = posixpath.dirname(target.rstrip("/"))
                if parent != workdir.rstrip("/"):
                    await dst.mkdir(parent, parents=True)  # a destination in a subdirectory
                files = await copy_tree(src, inp.source.path, dst, target, overwrite=True)
            except CenterUnavailable:
                raise  # not this input's fault: the submission is tried again later
            except (AdapterError, DomainError, PathRefused) as exc:
                await self._save(
                    record.id, "inputs", i, StagedFile(index=i, state="failed", error=_why(exc))
                )
                raise StagingFailed(
                    f"staging: input {i} ({inp.destination}): {_why(exc)}"
                ) from None
            one = files[0] if len(files) == 1 and files[0].path == "" else None
            record = await self._save(
                record.id,
                "inputs",
                i,
                StagedFile(
                    index=i,
                    path=target,
                    state="done",
                    size=sum(f.size for f in files),
                    sha256=one.sha256 if one else None,
                ),
            )
        async with self._locks[record.id]:  # an upload may have finished meanwhile
            current = await self.store.get(record.id)
            assert current is not None
            uploaded = {s.index for s in current.staging.inputs if s.state == "done"}
            waiting = [
                f"input {i} ({inp.destination})"
                for i, inp in enumerate(current.spec.inputs)
                if inp.upload and i not in uploaded
            ]
            if waiting:
                reason = f"waiting for the upload of {', '.join(waiting)}"
                return await self.store.update(record.id, reason=reason), False
        return current, True

    async def upload_target(self, record: JobRecord, index: int) -> tuple[CenterFiles, str]:
        """Where an upload input goes, checked; (files, full path)."""
        if not 0 <= index < len(record.spec.inputs):
            raise DomainError("not_found", f"index: the job has no input {index}", "index")
        if not record.spec.inputs[index].upload:
            raise DomainError(
                "not_an_upload", f"index: input {index} is copied from a center", "index"
            )
        if record.state is not JobState.SUBMITTING or record.native_id is not None:
            raise DomainError(
                "job_submitted", "index: the job has been submitted; inputs are fixed", "index"
            )
        dst, workdir = await self._view(record)
        await dst.mkdir(workdir, parents=True)
        full, _ = await dst.open_write(
            _at(workdir, record.spec.inputs[index].destination), 0, True, "destination"
        )
        return dst, full

    async def uploaded(
        self, record: JobRecord, index: int, full: str, size: int, sha256: str | None
    ) -> JobRecord:
        item = StagedFile(index=index, path=full, state="done", size=size, sha256=sha256)
        return await self._save(record.id, "inputs", index, item)

    # ------------------------------------------------------------ outputs

    def holds(self, record: JobRecord, state: JobState) -> bool:
        """Whether a job the center reports in `state` must wait for its outputs."""
        return (
            state in TERMINAL_STATES
            and bool(record.spec.outputs)
            and not (record.staging.collected)
        )

    def collect(self, record: JobRecord, final: JobState) -> None:
        """Start collecting a job's outputs (once), then give it its final state."""
        if record.id in self._collecting:
            return
        task = asyncio.create_task(self._collect(record, final), name=f"stage-out-{record.id}")
        self._collecting[record.id] = task
        task.add_done_callback(lambda _: self._collecting.pop(record.id, None))

    async def _collect(self, record: JobRecord, final: JobState) -> None:
        """Collect under the job's lease `stageout/<id>`; nothing while another replica
        holds it (that one collects them)."""
        name = f"{STAGEOUT_PREFIX}{record.id}"
        try:
            async with claim(self.leases, name, self.lease_ttl) as lease:
                if lease is None:
                    log.info("job %s: outputs collected by another replica", record.id)
                    return
                current = await self.store.get(record.id)
                if current is None or current.staging.collected:
                    return  # collected meanwhile, before this replica held the lease
                await self._collect_held(current, final, lease)
        except LeaseLost:
            log.info("job %s: output collection went to another replica", record.id)
        except StoreError as exc:
            log.warning("job %s: outputs not collected now: %s", record.id, exc)

    async def _finish(self, job_id: str, lease: Lease | None, **fields: object) -> JobRecord:
        """The job's final write, only while its collection's lease is still held."""
        return (await self.store.update_many([(job_id, fields)], lease=lease))[0]

    async def _collect_held(self, record: JobRecord, final: JobState, lease: Lease) -> None:
        problems: list[str] = []
        try:
            src, workdir = await self._view(record)
        except PathRefused as exc:  # a root removed from the center's config since
            await self._fail_outputs(record, final, f"the working directory: {exc.message}", lease)
            return
        except (AdapterError, DomainError) as exc:
            log.warning("job %s: cannot reach its outputs: %s", record.id, _why(exc))
            return  # the next poll tries again
        for i, out in enumerate(record.spec.outputs):
            path = _at(workdir, out.source)
            item = StagedFile(index=i, path=path)
            try:
                field = f"outputs[{i}].source"
                if (await src.stat(path, field)).type == "dir":
                    # A directory: each file's copy is verified by copy_tree; the
                    # output's size is theirs together.
                    item.size = 0
                    if out.destination is not None:
                        dst = await self._destination(
                            record, out.destination.center, out.destination.path
                        )
                        copied = await copy_tree(
                            src, path, dst, out.destination.path, overwrite=True
                        )
                        item.size = sum(f.size for f in copied)
                        item.copied_to = out.destination
                    item.state = "done"
                    record = await self._save(record.id, "outputs", i, item)
                    continue
                item.sha256, item.size = await src.sha256(path, field)
                if out.destination is not None:
                    dst = await self._destination(
                        record, out.destination.center, out.destination.path
                    )
                    copied = await copy_tree(src, path, dst, out.destination.path, overwrite=True)
                    if copied[0].sha256 != item.sha256:
                        raise StagingFailed("the copy's checksum differs from the original")
                    item.copied_to = out.destination
                item.state = "done"
            except CenterUnavailable as exc:
                log.warning("job %s: outputs wait for a center: %s", record.id, exc.message)
                return  # nothing is decided; the next poll that sees the job ended tries again
            except (AdapterError, DomainError, PathRefused, StagingFailed) as exc:
                item.state, item.error = "failed", _why(exc)
                problems.append(f"output {i} ({out.source}): {item.error}")
            record = await self._save(record.id, "outputs", i, item)
        staging = record.staging.model_copy(update={"collected": True, "final_state": final})
        state, reason = final, None
        if problems and final is JobState.COMPLETED:
            state, reason = JobState.FAILED, "staging: " + "; ".join(problems)
        elif problems:
            reason = "staging: " + "; ".join(problems)
        await self._finish(
            record.id,
            lease,
            state=state,
            reason=reason,
            staging=staging,
            finished_at=record.finished_at or utcnow(),
        )
        log.info("job %s: outputs collected; %s", record.id, state.value)

    async def _fail_outputs(
        self, record: JobRecord, final: JobState, why: str, lease: Lease | None = None
    ) -> None:
        """None of the outputs can be collected: each is failed, and so is the job if it
        completed."""
        for i, out in enumerate(record.spec.outputs):
            path = out.source
            item = StagedFile(index=i, path=path, state="failed", error=why)
            record = await self._save(record.id, "outputs", i, item)
        staging = record.staging.model_copy(update={"collected": True, "final_state": final})
        state = JobState.FAILED if final is JobState.COMPLETED else final
        await self._finish(
            record.id,
            lease,
            state=state,
            reason=f"staging: {why}",
            staging=staging,
            finished_at=record.finished_at or utcnow(),
        )
        log.warning("job %s: outputs not collected: %s", record.id, why)
