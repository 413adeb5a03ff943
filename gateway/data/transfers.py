"""Center-to-center transfers: accepted, stored, run in the background, resumable.

A transfer is checked before it is accepted (both centers known, the user has
a login at each, both paths inside their roots, the source exists), stored
QUEUED, then run by a task of its own; at most `MAX_RUNNING` run at once.
Progress is kept in memory and written to the store at most once a second and
at every file's end, so a gateway that stops loses no finished file: at start
it takes up every transfer that had not ended, skipping the files done.

Among replicas sharing one store, a transfer runs at the replica holding its
lease `transfer/<id>` (taken before the record is stored, renewed while it runs,
released once its outcome is stored). At start and every `sweep_every` seconds
each replica takes up the unfinished transfers whose lease is free: those of a
replica that stopped or died, at most `lease_ttl + sweep_every` seconds after its
last renewal. A transfer whose lease is lost stops without writing (its new
holder goes on with it). A cancel asked of a replica that does not run the
transfer is passed on through the record (`cancel_requested`), which the runner
reads before each progress write.

While the store cannot be reached, copies go on; a progress write that fails is
skipped, the final one is tried again (for `FINAL_SAVE_FOR` seconds). A transfer
that could not be started for want of the store is taken up again by a sweep.
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
from gateway.store.contract import StoreError, StoreUnavailable
from gateway.store.leases import Held, LeasedWork, Leases, acquire, release_quietly
from gateway.store.outages import (
    FINAL_SAVE_FOR,
    LEASE_TTL,
    SWEEP_EVERY,
    save_final,
)
from gateway.units import utcnow

log = logging.getLogger("hpcfed.transfers")

MAX_RUNNING = 4
_SAVE_EVERY = 1.0  # seconds between progress writes
#: How long a cancel asked of a replica that does not run the transfer waits for its end.
CANCEL_WAIT = 15.0


def transfer_lease(transfer_id: str) -> str:
    return f"transfer/{transfer_id}"


class TransferService(LeasedWork):
    def __init__(
        self,
        store: TransferStore,
        centers: CenterRegistry,
        leases: Leases | None = None,
        *,
        lease_ttl: float = LEASE_TTL,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        # The leases: who runs which transfer.
        super().__init__(leases, lease_ttl, sweep_every)
        self.store = store
        self.centers = centers
        self._live: dict[str, TransferRecord] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_RUNNING)
        self._saving: set[asyncio.Task[None]] = set()
        #: Told of the bytes each copy moves: (direction "copied", count); set by the metrics.
        self.on_bytes: Callable[[str, int], None] | None = None

    async def start(self) -> None:
        """Take up the unfinished transfers no replica runs (a previous run's), then
        look for such transfers every `sweep_every` seconds."""
        await self.take_up()
        self.start_sweep(
            self.take_up, "transfers: looking for unfinished ones", log, "transfers-sweep"
        )

    async def take_up(self) -> int:
        """Launch every unfinished transfer whose lease this replica gets; how many."""
        taken = 0
        for listed in await self.store.unfinished():
            if listed.id in self._tasks:
                continue
            lease, asked = await acquire(self.leases, transfer_lease(listed.id), self.lease_ttl)
            if lease is None:
                continue  # running at another replica
            try:
                # Read again under the lease: its last holder may have ended it since.
                record = await self.store.get(listed.id)
            except BaseException:
                await release_quietly(self.leases, lease)
                raise
            if record is None or record.terminal or record.id in self._tasks:
                await release_quietly(self.leases, lease)
                continue
            if record.cancel_requested:
                record.state, record.finished_at = "CANCELLED", utcnow()
                record.error = record.error or "cancelled"
                try:
                    await self.store.save(record)
                finally:
                    await release_quietly(self.leases, lease)
                continue
            log.info("transfer %s: resuming (attempt %d)", record.id, record.attempts + 1)
            self._launch(record, Held(self.leases, lease, self.lease_ttl, asked=asked))
            taken += 1
        return taken

    async def close(self) -> None:
        await self.stop_sweep()
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
        transfer_id = str(uuid.uuid4())
        # Held before the record is stored, so that no sweep takes it up meanwhile.
        lease, asked = await acquire(self.leases, transfer_lease(transfer_id), self.lease_ttl)
        if lease is None:  # a new id: no replica can hold it
            raise StoreError(f"lease of new transfer {transfer_id} held elsewhere")
        record = TransferRecord(
            id=transfer_id,
            owner=owner,
            source=request.source,
            destination=request.destination,
            overwrite=request.overwrite,
            created_at=now,
            updated_at=now,
        )
        try:
            await self.store.save(record)
        except BaseException:
            await release_quietly(self.leases, lease)
            raise
        self._launch(record, Held(self.leases, lease, self.lease_ttl, asked=asked))
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
            return await self.get(owner, transfer_id)
        lease = await self.leases.acquire(transfer_lease(transfer_id), self.lease_ttl)
        if lease is not None:  # no replica runs it
            try:
                stored = await self.store.get(transfer_id) or record
                if not stored.terminal:
                    stored.cancel_requested = True
                    stored.state, stored.finished_at = "CANCELLED", utcnow()
                    await self.store.save(stored)
            finally:
                await release_quietly(self.leases, lease)
        else:
            await self._cancel_elsewhere(transfer_id)
        return await self.get(owner, transfer_id)

    async def _cancel_elsewhere(self, transfer_id: str) -> None:
        """Ask the replica running the transfer to cancel it (through the record, until
        it reads it) and wait, for `CANCEL_WAIT` seconds at most, for its end."""
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            stored = await self.store.get(transfer_id)
            if stored is None or stored.terminal:
                return
            if not stored.cancel_requested:
                stored.cancel_requested = True
                await self.store.save(stored)
            await asyncio.sleep(0.2)
        log.warning("transfer %s: cancel asked; its replica has not ended it yet", transfer_id)

    # ------------------------------------------------------------ running

    def _launch(self, record: TransferRecord, held: Held) -> None:
        self._live[record.id] = record
        task = asyncio.create_task(self._run(record, held), name=f"transfer-{record.id}")
        self._tasks[record.id] = task
        held.on_lost = task.cancel
        held.start()

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(record.id, None)
            self._live.pop(record.id, None)

        task.add_done_callback(done)

    async def _run(self, record: TransferRecord, held: Held) -> None:
        try:
            await self._run_held(record, held)
        finally:
            await held.release()

    async def _run_held(self, record: TransferRecord, held: Held) -> None:
        try:
            async with self._slots:
                await self._copy(record)
            record.state = "COMPLETED"
        except asyncio.CancelledError:
            if held.lost:
                log.warning("transfer %s: left to the replica that holds it now", record.id)
                return
            record.state = "CANCELLED"
            record.error = "cancelled" if record.cancel_requested else "the gateway stopped"
            if not record.cancel_requested:
                record.state = "QUEUED"  # taken up again at the next start
        except StoreUnavailable as exc:
            # Not the transfer's fault: a sweep takes it up again once the store answers.
            log.warning("transfer %s: put off, the store is out of reach: %s", record.id, exc)
            record.state = "QUEUED"
        except (DomainError, AdapterError, PathRefused) as exc:
            record.state, record.error = "FAILED", exc.message
        except Exception:
            log.exception("transfer %s failed", record.id)
            record.state, record.error = "FAILED", "internal error; see the gateway log"
        if record.terminal:
            record.finished_at = utcnow()
        await asyncio.shield(self._save_final(record, held))
        log.info("transfer %s: %s %s", record.id, record.state, record.error or "")

    async def _save_final(self, record: TransferRecord, held: Held) -> None:
        """Store the outcome while the lease holds, trying again while the store is out
        of reach (for `FINAL_SAVE_FOR` seconds; once when the service is closing)."""
        deadline = time.monotonic() + FINAL_SAVE_FOR
        if self._saving:  # a progress write still under way must not land after this one
            await asyncio.gather(*self._saving, return_exceptions=True)
        if not await save_final(
            lambda: self.store.save(record),
            held,
            f"transfer {record.id}: its outcome",
            log,
            until=deadline,
            closing=lambda: self._closing,
        ):
            log.warning("transfer %s: lease lost before its outcome was stored", record.id)

    async def _save_progress(self, record: TransferRecord) -> None:
        """A progress write, unless a cancel was asked through the record meanwhile
        (by a replica that does not run it): then the run is cancelled instead."""
        task = self._tasks.get(record.id)
        try:
            stored = await self.store.get(record.id)
            if stored is not None and stored.cancel_requested and not record.cancel_requested:
                record.cancel_requested = True
                if task is not None:
                    task.cancel()
                return
            await self.store.save(record)
        except StoreError as exc:
            log.debug("transfer %s: progress not stored: %s", record.id, exc)

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
                saving = asyncio.get_running_loop().create_task(self._save_progress(record))
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
