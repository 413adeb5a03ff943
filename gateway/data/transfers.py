"""Center-to-center transfers: accepted, stored, run in the background, resumable.

A transfer is checked before it is accepted (both centers known, the user has
a login at each, both paths inside their roots, the source exists), stored
QUEUED, then run by a task of its own; at most `MAX_RUNNING` run at once.
Progress is kept in memory and written to the store at most once a second and
at every file's end, so a gateway that stops loses no finished file: at start
it takes up every transfer that had not ended, skipping the files done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from adapters.errors import AdapterError, FileNotFound
from adapters.files.paths import PathRefused
from gateway.centers.configured import CenterRegistry
from gateway.data.copying import CopiedFile, check_overlap, copy_tree, plan
from gateway.data.models import TransferFile, TransferRecord, TransferRequest
from gateway.data.store import TransferStore
from gateway.errors import DomainError
from gateway.units import utcnow

log = logging.getLogger("hpcfed.transfers")

MAX_RUNNING = 4
_SAVE_EVERY = 1.0  # seconds between progress writes


class TransferService:
    def __init__(self, store: TransferStore, centers: CenterRegistry) -> None:
        self.store = store
        self.centers = centers
        self._live: dict[str, TransferRecord] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_RUNNING)
        self._saving: set[asyncio.Task[TransferRecord]] = set()
        #: Told of the bytes each copy moves: (direction "copied", count); set by the metrics.
        self.on_bytes: Callable[[str, int], None] | None = None

    async def start(self) -> None:
        """Take up the transfers a previous run left unfinished."""
        for record in await self.store.unfinished():
            log.info("transfer %s: resuming", record.id)
            self._launch(record)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)

    # ------------------------------------------------------------ API

    async def create(self, owner: str, request: TransferRequest) -> TransferRecord:
        src = self.centers.get(request.source.center).files_for(owner)
        dst = self.centers.get(request.destination.center).files_for(owner)
        src_full = await src.resolve(request.source.path, "source.path")
        dst_full = await dst.resolve(request.destination.path, "destination.path")
        check_overlap(src, src_full, dst, dst_full)
        try:
            await src.stat(request.source.path, "source.path")
        except FileNotFound as exc:
            raise DomainError("file_not_found", exc.message, field="source.path") from None
        now = utcnow()
        record = TransferRecord(
            id=str(uuid.uuid4()),
            owner=owner,
            source=request.source,
            destination=request.destination,
            overwrite=request.overwrite,
            created_at=now,
            updated_at=now,
        )
        await self.store.save(record)
        self._launch(record)
        return record

    async def get(self, owner: str | None, transfer_id: str) -> TransferRecord:
        record = self._live.get(transfer_id) or await self.store.get(transfer_id)
        if record is None or (owner is not None and record.owner != owner):
            raise DomainError("not_found", f"transfer {transfer_id} not found", field="id")
        return record

    async def list(self, owner: str | None, limit: int) -> list[TransferRecord]:
        stored = await self.store.list(owner, limit)
        return [self._live.get(r.id, r) for r in stored]

    async def cancel(self, owner: str | None, transfer_id: str) -> TransferRecord:
        record = await self.get(owner, transfer_id)
        if record.terminal:
            return record
        record.cancel_requested = True
        task = self._tasks.get(transfer_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        else:
            record.state, record.finished_at = "CANCELLED", utcnow()
            await self.store.save(record)
        return await self.get(owner, transfer_id)

    # ------------------------------------------------------------ running

    def _launch(self, record: TransferRecord) -> None:
        self._live[record.id] = record
        task = asyncio.create_task(self._run(record), name=f"transfer-{record.id}")
        self._tasks[record.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(record.id, None)
            self._live.pop(record.id, None)

        task.add_done_callback(done)

    async def _run(self, record: TransferRecord) -> None:
        try:
            async with self._slots:
                await self._copy(record)
            record.state = "COMPLETED"
        except asyncio.CancelledError:
            record.state = "CANCELLED"
            record.error = "cancelled" if record.cancel_requested else "the gateway stopped"
            if not record.cancel_requested:
                record.state = "QUEUED"  # taken up again at the next start
        except (DomainError, AdapterError, PathRefused) as exc:
            record.state, record.error = "FAILED", exc.message
        except Exception:
            log.exception("transfer %s failed", record.id)
            record.state, record.error = "FAILED", "internal error; see the gateway log"
        if record.terminal:
            record.finished_at = utcnow()
        with contextlib.suppress(Exception):
            await asyncio.shield(self.store.save(record))
        log.info("transfer %s: %s %s", record.id, record.state, record.error or "")

    async def _copy(self, record: TransferRecord) -> None:
        src = self.centers.get(record.source.center).files_for(record.owner)
        dst = self.centers.get(record.destination.center).files_for(record.owner)
        record.state, record.attempts = "RUNNING", record.attempts + 1
        record.started_at = record.started_at or utcnow()
        src_full, dirs, files = await plan(src, record.source.path)
        done = {f.path: f for f in record.files if f.state == "done"}
        items = []
        for item in files:
            kept = done.get(item.path)
            if kept is not None and kept.size == item.size:
                items.append(CopiedFile(item.path, item.size, kept.sha256, "done", kept.attempts))
            else:
                items.append(item)
        record.bytes_total = sum(f.size for f in items)
        record.files_total = len(items)
        record.bytes_done = sum(f.size for f in items if f.state == "done")
        record.files_done = sum(1 for f in items if f.state == "done")
        record.files = [TransferFile(**f.public()) for f in items]  # type: ignore[arg-type]
        await self.store.save(record)
        saved_at = time.monotonic()

        def progress(n: int) -> None:
            nonlocal saved_at
            record.bytes_done += n
            if time.monotonic() - saved_at >= _SAVE_EVERY:
                saved_at = time.monotonic()
                saving = asyncio.get_running_loop().create_task(self.store.save(record))
                self._saving.add(saving)
                saving.add_done_callback(self._saving.discard)

        def on_file(item: CopiedFile) -> None:
            record.files = [
                TransferFile(**f.public()) if f is item else record.files[i]  # type: ignore[arg-type]
                for i, f in enumerate(items)
            ]
            if item.state == "done":
                record.files_done += 1

        await copy_tree(
            src,
            record.source.path,
            dst,
            record.destination.path,
            # A transfer taken up again may replace what its own first run wrote.
            overwrite=record.overwrite or record.attempts > 1,
            planned=(src_full, dirs, items),
            progress=progress,
            on_file=on_file,
            moved=lambda n: self.on_bytes("copied", n) if self.on_bytes else None,
        )
        record.bytes_done = record.bytes_total
