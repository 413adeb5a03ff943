"""Running access evaluations: one at a time per center, in background tasks the
service owns, their records stored after every check.

The latest finished evaluation of a center (DONE or ERROR) is what admission
looks at (`latest`); one still running does not count yet.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from gateway.centers.configured import CenterRegistry
from gateway.centers.evaluation.context import PowerSource
from gateway.centers.evaluation.models import EvaluationRecord
from gateway.centers.evaluation.store import EvaluationStore
from gateway.centers.evaluation.suite import SuiteRun, new_record
from gateway.config_models import AdmissionConfig
from gateway.errors import DomainError
from gateway.units import utcnow

log = logging.getLogger("hpcfed.evaluation")

STOPPED = "the gateway stopped during the evaluation"
#: close() waits this long for cancelled runs to clean up (cancel jobs, remove files).
CLOSE_TIMEOUT = 30.0


class EvaluationService:
    def __init__(
        self,
        store: EvaluationStore,
        centers: CenterRegistry,
        power: PowerSource,
        admission_config: AdmissionConfig,
    ) -> None:
        self.store = store
        self.centers = centers
        self.power = power
        self.admission_config = admission_config
        self._running: dict[str, EvaluationRecord] = {}  # center -> its running evaluation
        self._tasks: dict[str, asyncio.Task[None]] = {}  # evaluation id -> its run

    async def start_service(self) -> None:
        """Records a previous process left RUNNING can never finish: mark them ERROR."""
        for record in await self.store.running():
            log.warning("evaluation %s of %s: %s", record.id, record.center, STOPPED)
            _interrupt(record)
            await self.store.save(record)

    async def close(self) -> None:
        """Cancel the running evaluations; each is stored as ERROR."""
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
        running = self._running.get(center_id)
        if running is not None:
            raise _already_running(running)
        record = new_record(str(uuid.uuid4()), center_id, user)
        run = SuiteRun(record, center, self.power, self.admission_config, self.store.save)
        self._running[center_id] = record
        try:
            await self.store.save(record)
        except BaseException:
            del self._running[center_id]
            raise
        task = asyncio.create_task(self._run(run), name=f"evaluation-{record.id}")
        self._tasks[record.id] = task
        log.info("evaluation %s of %s started by %s", record.id, center_id, user)
        return record

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

    async def _run(self, run: SuiteRun) -> None:
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
                await self.store.save(record)
            except Exception:
                log.exception("evaluation %s: the final record could not be stored", record.id)
            self._running.pop(record.center, None)
            self._tasks.pop(record.id, None)
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
