"""Running access evaluations: one at a time per center, in background tasks the
service owns, their records stored after every check.

The latest finished evaluation of a center (DONE or ERROR) is what admission
looks at (`latest`); one still running does not count yet.

Among replicas sharing one store, "one at a time" is the lease
`evaluation/<center>`: taken before the record is stored, renewed while the
evaluation runs, released once its outcome is stored; a start asked of any
replica while another holds it is refused (`evaluation_running`). A RUNNING
record whose center's lease is free was left by a replica that stopped or died:
whoever notices (at start, and every `sweep_every` seconds) finishes it as
interrupted. With the embedded store every lease is this process's, so that is
every RUNNING record at start, as with one gateway.

While the store cannot be reached the evaluation goes on: a progress write that
fails is skipped, the final one is tried again for `FINAL_SAVE_FOR` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from gateway.centers.configured import CenterRegistry
from gateway.centers.evaluation.context import PowerSource
from gateway.centers.evaluation.models import EvaluationRecord
from gateway.centers.evaluation.store import EvaluationStore
from gateway.centers.evaluation.suite import SuiteRun, new_record
from gateway.config_models import AdmissionConfig
from gateway.errors import DomainError
from gateway.store.contract import StoreUnavailable
from gateway.store.leases import Held, LeasedWork, Leases, acquire, release_quietly
from gateway.store.outages import (
    FINAL_SAVE_FOR,
    LEASE_TTL,
    SWEEP_EVERY,
    save_final,
)
from gateway.units import utcnow

log = logging.getLogger("hpcfed.evaluation")

STOPPED = "the gateway stopped during the evaluation"
#: close() waits this long for cancelled runs to clean up (cancel jobs, remove files).
CLOSE_TIMEOUT = 30.0


def evaluation_lease(center_id: str) -> str:
    return f"evaluation/{center_id}"


class EvaluationService(LeasedWork):
    def __init__(
        self,
        store: EvaluationStore,
        centers: CenterRegistry,
        power: PowerSource,
        admission_config: AdmissionConfig,
        leases: Leases | None = None,
        *,
        lease_ttl: float = LEASE_TTL,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        # The leases: which replica evaluates which center.
        super().__init__(leases, lease_ttl, sweep_every)
        self.store = store
        self.centers = centers
        self.power = power
        self.admission_config = admission_config
        self._running: dict[str, EvaluationRecord] = {}  # center -> its running evaluation
        self._tasks: dict[str, asyncio.Task[None]] = {}  # evaluation id -> its run
        # Starting one and finishing an abandoned one take a center's lease in turn.
        self._guard = asyncio.Lock()

    async def start_service(self) -> None:
        """Records left RUNNING by a replica that is gone can never finish: mark them
        ERROR (now, and every `sweep_every` seconds)."""
        await self.finish_abandoned()
        self.start_sweep(
            self.finish_abandoned,
            "evaluations: looking for abandoned ones",
            log,
            "evaluations-sweep",
        )

    async def finish_abandoned(self) -> int:
        """Mark ERROR every RUNNING evaluation whose center's lease is free; how many."""
        finished = 0
        for listed in await self.store.running():
            async with self._guard:
                if listed.id in self._tasks or listed.center in self._running:
                    continue  # this replica's own (and its lease)
                name = evaluation_lease(listed.center)
                lease = await self.leases.acquire(name, self.lease_ttl)
                if lease is None:
                    continue  # a live replica runs it
                try:
                    finished += await self._interrupt_stale(listed.center, {listed.id})
                finally:
                    await release_quietly(self.leases, lease)
        return finished

    async def _interrupt_stale(self, center_id: str, ids: set[str] | None = None) -> int:
        """Under the center's lease: mark ERROR its RUNNING records (of `ids`), which no
        replica runs."""
        count = 0
        for record in await self.store.running():
            if record.center != center_id or (ids is not None and record.id not in ids):
                continue
            log.warning("evaluation %s of %s: %s", record.id, record.center, STOPPED)
            _interrupt(record)
            await self.store.save(record)
            count += 1
        return count

    async def close(self) -> None:
        """Cancel the running evaluations; each is stored as ERROR."""
        await self.stop_sweep()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in late:
                log.warning("evaluation task %s did not end in time", task.get_name())

    # ------------------------------------------------------------ API

    async def start(self, center_id: str, user: str) -> EvaluationRecord:
        center = self.centers.get(center_id)
        async with self._guard:
            running = self._running.get(center_id)
            if running is not None:
                raise _already_running(running)
            name = evaluation_lease(center_id)
            lease, asked = await acquire(self.leases, name, self.lease_ttl)
            if lease is None:
                raise await self._running_elsewhere(center_id)
            record = new_record(str(uuid.uuid4()), center_id, user)
            run = SuiteRun(record, center, self.power, self.admission_config, self._save_progress)
            self._running[center_id] = record
            try:
                # Under the lease no replica runs this center's evaluations: any still
                # RUNNING were left by one that is gone.
                await self._interrupt_stale(center_id)
                await self.store.save(record)
            except BaseException:
                del self._running[center_id]
                await release_quietly(self.leases, lease)
                raise
            held = Held(self.leases, lease, self.lease_ttl, asked=asked)
            task = asyncio.create_task(self._run(run, held), name=f"evaluation-{record.id}")
            held.on_lost = task.cancel
            held.start()
            self._tasks[record.id] = task
        log.info("evaluation %s of %s started by %s", record.id, center_id, user)
        return record

    async def _running_elsewhere(self, center_id: str) -> DomainError:
        """The refusal of a start while another replica evaluates the center."""
        for record in await self.store.running():
            if record.center == center_id:
                return _already_running(record)
        return DomainError(
            "evaluation_running",
            f"center {center_id}: an evaluation is still running",
            center=center_id,
        )

    async def get(self, center_id: str, evaluation_id: str) -> EvaluationRecord:
        record = self._live(evaluation_id) or await self.store.get(evaluation_id)
        if record is None or record.center != center_id:
            raise DomainError(
                "not_found",
                f"evaluation {evaluation_id} of center {center_id} not found",
                field="id",
            )
        return record

    async def list(self, center_id: str, limit: int = 100) -> list[EvaluationRecord]:
        """Newest first; a running one as it is now."""
        return [self._live(r.id) or r for r in await self.store.list(center_id, limit)]

    async def latest(self, center_id: str) -> EvaluationRecord | None:
        """The latest finished evaluation (DONE or ERROR), or None."""
        return await self.store.latest_finished(center_id)

    # ------------------------------------------------------------ running

    def _live(self, evaluation_id: str) -> EvaluationRecord | None:
        return next((r for r in self._running.values() if r.id == evaluation_id), None)

    async def _save_progress(self, record: EvaluationRecord) -> EvaluationRecord:
        """A write after a check: skipped while the store is out of reach (the next
        one, or the final one, stores the whole record)."""
        try:
            return await self.store.save(record)
        except StoreUnavailable as exc:
            log.warning("evaluation %s: progress not stored now: %s", record.id, exc)
            return record

    async def _save_final(self, record: EvaluationRecord, held: Held) -> None:
        if not await save_final(
            lambda: self.store.save(record),
            held,
            f"evaluation {record.id}: the final record",
            log,
            until=time.monotonic() + FINAL_SAVE_FOR,
            closing=lambda: self._closing,
        ):
            log.warning("evaluation %s: lease lost; left to the replica that noticed", record.id)

    async def _run(self, run: SuiteRun, held: Held) -> None:
        record = run.record
        try:
            await run.run()
            record.state = "DONE"
        except asyncio.CancelledError:
            _interrupt(record)
            raise
        except Exception as exc:
            log.exception("evaluation %s of %s could not run", record.id, record.center)
            record.state, record.error = "ERROR", f"{type(exc).__name__}: {exc}"
        finally:
            record.finished_at = record.finished_at or utcnow()
            try:
                await asyncio.shield(self._save_final(record, held))
            finally:
                self._running.pop(record.center, None)
                self._tasks.pop(record.id, None)
                await held.release()
        log.info(
            "evaluation %s of %s: %s, verdict %s, score %s",
            record.id,
            record.center,
            record.state,
            record.verdict,
            record.score,
        )


def _interrupt(record: EvaluationRecord) -> None:
    record.state, record.error, record.finished_at = "ERROR", STOPPED, utcnow()
    for check in record.checks:
        if check.state in ("running", "pending"):
            check.state, check.message = "skipped", f"interrupted: {STOPPED}"


def _already_running(record: EvaluationRecord) -> DomainError:
    return DomainError(
        "evaluation_running",
        f"center {record.center}: evaluation {record.id} is still running",
        center=record.center,
        evaluation=record.id,
    )
