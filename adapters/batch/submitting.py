"""How submissions share remote commands: jobs prepared by `JobDirAdapter.submit_many`
(of one call or of concurrent ones) wait in one queue per adapter and go `batch_size`
to a command, a few commands at once over the pooled connection.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from adapters.base import JobRequest
from adapters.batch.jobdir import JobDir, JobFile
from adapters.errors import CenterUnavailable

#: What a job's submission gave: its native id, or the error `submit` would raise.
Outcome = str | Exception


@dataclass(frozen=True)
class Prepared:
    """A job of a `submit_many` call, ready to send."""

    index: int  # in the call's list
    job: JobRequest
    jobdir: JobDir
    files: list[JobFile]


#: Submits its jobs in one remote command: each one's outcome, in order.
SendChunk = Callable[[list[Prepared]], Awaitable[list[Outcome]]]
_Waiting = tuple[Prepared, "asyncio.Future[Outcome]"]


class SubmitQueue:
    """Prepared jobs waiting for a submission command, and the commands under way.

    At most `parallel` commands run at once, each carrying up to `batch_size` jobs;
    beyond `eager` commands under way, one is started only for a full batch. A job
    that arrives when the center is idle goes at once, alone; jobs that arrive
    meanwhile (a batch, or many clients at once) share the next commands.
    """

    def __init__(
        self, center_id: str, send: SendChunk, *, batch_size: int, parallel: int, eager: int
    ) -> None:
        self.center_id = center_id
        self.batch_size, self.parallel, self.eager = batch_size, parallel, eager
        self._send_chunk = send
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._sending = 0
        self._senders: set[asyncio.Task[None]] = set()

    async def submit(self, ready: Sequence[Prepared]) -> list[Outcome]:
        """Each job's outcome, in order. A command that fails as a whole (the connection
        lost, its time up) leaves its jobs' outcome unknown: `CenterUnavailable` for
        each, for the caller to reconcile by gateway id. A caller cancelled before its
        jobs were sent leaves them unsent."""
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[Outcome]] = []
        for prepared in ready:
            future: asyncio.Future[Outcome] = loop.create_future()
            self._queue.append((prepared, future))
            waiting.append(future)
        self._dispatch()
        try:
            return [await future for future in waiting]
        except BaseException:
            for future in waiting:
                future.cancel()  # a job not yet sent is never sent
            raise

    def _dispatch(self) -> None:
        """Send what is queued, as far as the limits allow."""
        while self._queue and self._sending < self.parallel:
            if self._sending >= self.eager and len(self._queue) < self.batch_size:
                return  # the next command to end sends these, with those that come meanwhile
            chunk: list[_Waiting] = []
            while self._queue and len(chunk) < self.batch_size:
                prepared, future = self._queue.popleft()
                if not future.done():  # its caller gave up before it was sent
                    chunk.append((prepared, future))
            if not chunk:
                return
            self._sending += 1
            task = asyncio.create_task(self._send(chunk))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self, chunk: list[_Waiting]) -> None:
        try:
            outcomes = await self._send_chunk([p for p, _ in chunk])
        except BaseException as exc:
            unknown = CenterUnavailable(
                f"center {self.center_id}: the submission was interrupted ({exc!r}); "
                "its outcome is unknown",
                center=self.center_id,
            )
            outcomes = [unknown] * len(chunk)
            raise
        finally:
            self._sending -= 1
            for (_, future), outcome in zip(chunk, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
            self._dispatch()
