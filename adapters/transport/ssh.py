"""Pooled SSH connections to centers: pinned host keys, timeouts, SFTP.

One paramiko `Transport` per (center, host, port, login) carries every exec
and SFTP channel to that login. All blocking paramiko work runs in worker
threads, bounded per connection by `max_sessions` (OpenSSH's MaxSessions caps
channels per connection). A transport found dead is dropped and the next call
reconnects; a call is retried only when it failed before its command could
have reached the center.

This module holds the pool and the event-loop half of a connection; opening a
transport is `adapters.transport.connect` (under the host-key policy of
`adapters.transport.hostkeys`), and the worker-thread half (channels, commands,
SFTP sessions) is `adapters.transport.channels`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import paramiko

from adapters.context import REQUEST_ID
from adapters.errors import CenterUnavailable
from adapters.transport.channels import ChannelWork, CommandResult, NotSent, head
from adapters.transport.connect import SSHTarget, open_transport
from adapters.transport.hostkeys import parse_pinned_key

__all__ = ["CommandObserver", "CommandResult", "SSHConnection", "SSHPool", "SSHTarget"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# After a failed connect the next attempt waits base * 2**(n-1) seconds (jittered, capped);
# calls in between fail at once, so an outage costs no burst of handshakes.
_RECONNECT_BASE, _RECONNECT_CAP = 0.25, 5.0
#: Told of every command run: (center id, seconds, outcome "ok" / "failed" / "unavailable").
CommandObserver = Callable[[str, float, str], None]


def _close_late_transport(connecting: concurrent.futures.Future[paramiko.Transport]) -> None:
    """A connect that finished after its caller gave up: close what it opened."""
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()


class SSHConnection(ChannelWork):
    """One pooled login at one center. Belongs to one event loop."""

    def __init__(
        self,
        target: SSHTarget,
        executor: concurrent.futures.Executor,
        observe: CommandObserver | None = None,
        center_threads: asyncio.Semaphore | None = None,
    ) -> None:
        self.target = target
        # Shared by every login at this center: the bulkhead that keeps a hung center
        # from taking every worker thread of the pool.
        self._center_threads = center_threads
        self._connect_failures = 0
        self._retry_at = 0.0  # monotonic time before which no new connect is tried
        self._connect_error = ""  # the last failed connect's message
        self._observe = observe
        # Commands started, one exec channel each; status economy is asserted on it.
        self.commands_run = 0
        self.connects = 0  # transports established over this connection's life
        self._executor = executor
        self._pinned = [parse_pinned_key(k) for k in target.host_keys]
        if not self._pinned:
            raise ValueError(f"center {target.center_id}: no pinned host keys")
        self._transport: paramiko.Transport | None = None
        self._connect_lock = asyncio.Lock()
        self._sessions = asyncio.Semaphore(target.max_sessions)
        self._count_lock = threading.Lock()
        self._home: str | None = None
        #: What this login's startup files print around every command (an excerpt), if any.
        self.login_noise: str | None = None
        #: Why SFTP runs through /bin/sh instead of the sftp subsystem, once it must.
        self.sftp_via_shell: str | None = None
        self._sftp_warned = False

    # ------------------------------------------------------------ public
    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - enforced in the worker thread
    ) -> CommandResult:
        """Run `command` (sh syntax) under /bin/sh, whatever the login shell and its startup
        files print (`adapters.transport.framing`); never re-run one that may have run."""
        limit = self.target.command_timeout if timeout is None else timeout
        started = time.monotonic()
        result: CommandResult | None = None
        try:
            result = await self._run(command, stdin, limit)
            return result
        finally:
            if result is None:
                self._record(command, time.monotonic() - started, "unavailable", None)
            else:
                outcome = "ok" if result.exit_status == 0 else "failed"
                self._record(command, time.monotonic() - started, outcome, result.exit_status)

    def _record(self, command: str, seconds: float, outcome: str, exit_status: int | None) -> None:
        t = self.target
        # The command line carries paths and ids only: scripts and secrets go on stdin.
        log.debug(
            "center %s: %s ran %s in %.3fs",
            t.center_id,
            t.login,
            head(command),
            seconds,
            extra={
                "center": t.center_id,
                "login": t.login,
                "request_id": REQUEST_ID.get(),
                "exit_status": exit_status,
                "outcome": outcome,
                "duration_seconds": round(seconds, 6),
            },
        )
        if self._observe is not None:
            try:
                self._observe(t.center_id, seconds, outcome)
            except Exception:  # an observer's failure never fails a command
                log.exception("command observer failed")

    async def _run(self, command: str, stdin: bytes | None, limit: float) -> CommandResult:
        for attempt in (1, 2):
            transport = await self._live_transport()
            try:
                return await self._guarded(
                    lambda t=transport: self._exec(t, command, stdin, limit),
                    transport,
                    limit + self.target.connect_timeout,
                )
            except NotSent as exc:
                self._forget(transport)
                if attempt == 2:
                    raise self._unavailable(f"cannot open a session: {exc}") from None
                log.info(
                    "center %s: session open failed (%s), reconnecting", self.target.center_id, exc
                )
        raise AssertionError("unreachable")

    async def sftp(self, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run `fn` in a worker thread with an SFTP session of its own."""
        for attempt in (1, 2):
            transport = await self._live_transport()
            try:
                return await self._in_thread(lambda t=transport: self._with_sftp(t, fn))
            except NotSent as exc:
                self._forget(transport)
                if attempt == 2:
                    raise self._unavailable(f"cannot open an SFTP session: {exc}") from None
        raise AssertionError("unreachable")

    async def home(self) -> str:
        """The login's absolute home directory (SFTP starts there), cached."""
        if self._home is None:
            self._home = await self.sftp(lambda s: s.normalize("."))
        return self._home

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, transport.close)

    @property
    def transport(self) -> paramiko.Transport | None:
        return self._transport

    # ------------------------------------------------------------ plumbing
    async def _in_thread(self, fn: Callable[[], T], guard: float | None = None) -> T:
        """Run `fn` in a worker thread once one of the `max_sessions` slots is free.

        The slot is released when the thread really finishes, not when an awaiting
        task is cancelled, so channels never exceed max_sessions. `guard` bounds the
        run itself (not the wait for a slot).
        """
        await self._sessions.acquire()
        loop = asyncio.get_running_loop()
        try:
            cfut = await self._submit(fn)
        except BaseException:
            self._sessions.release()
            raise

        def release(_: object) -> None:
            try:
                loop.call_soon_threadsafe(self._sessions.release)
            except RuntimeError:  # the loop is gone; nobody is left to wait
                pass

        cfut.add_done_callback(release)
        return await asyncio.wait_for(asyncio.wrap_future(cfut), guard)

    async def _submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Hand `fn` to a worker thread once this center has one of its threads free."""
        slots = self._center_threads
        if slots is not None:
            await slots.acquire()
        try:
            # The worker sees the caller's context (the request id its logs carry).
            cfut = self._executor.submit(contextvars.copy_context().run, fn)
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        if slots is not None:
            loop = asyncio.get_running_loop()

            def release(_: object) -> None:
                try:
                    loop.call_soon_threadsafe(slots.release)
                except RuntimeError:  # the loop is gone; nobody is left to wait
                    pass

            cfut.add_done_callback(release)
        return cfut

    async def _guarded(self, fn: Callable[[], T], transport: paramiko.Transport, limit: float) -> T:
        # The thread enforces the command deadline itself; this guard catches a
        # server that stops answering protocol requests: the transport is hung.
        try:
            return await self._in_thread(fn, limit + 5.0)
        except TimeoutError:
            self._forget(transport)
            raise self._unavailable(f"no answer within {limit:.0f}s; connection dropped") from None

    async def _live_transport(self) -> paramiko.Transport:
        transport = self._transport
        if transport is not None and transport.is_active():
            return transport
        async with self._connect_lock:  # concurrent first calls share one transport
            transport = self._transport
            if transport is not None and transport.is_active():
                return transport
            if transport is not None:
                self._forget(transport)
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise CenterUnavailable(
                    f"{self._connect_error} (next connect attempt in {wait:.1f}s)",
                    center=self.target.center_id,
                )
            pending = await self._submit(self._connect)
            try:
                # Each step (TCP, handshake, auth) has its own timeout; this bounds the sum.
                transport = await asyncio.wait_for(
                    asyncio.wrap_future(pending), self.target.connect_timeout * 3 + 5.0
                )
            except TimeoutError:
                pending.add_done_callback(_close_late_transport)
                error = self._unavailable("connecting timed out")
                self._connect_failed(error.message)
                raise error from None
            except CenterUnavailable as exc:
                self._connect_failed(exc.message)
                raise
            self._connect_failures, self._retry_at = 0, 0.0
            self._transport = transport
            self.connects += 1
            return transport

    def _connect_failed(self, error: str) -> None:
        """Back off before the next connect: exponential, jittered (half to all of it), capped."""
        self._connect_failures += 1
        ceiling = min(_RECONNECT_CAP, _RECONNECT_BASE * 2 ** (self._connect_failures - 1))
        jitter = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - spreads retries, no secret
        self._retry_at = time.monotonic() + jitter
        self._connect_error = error

    def _forget(self, transport: paramiko.Transport) -> None:
        if self._transport is transport:
            self._transport = None
        # Closing may wait for the transport thread: do it off the loop.
        try:
            self._executor.submit(transport.close)
        except RuntimeError:  # the pool is closing; close right here instead
            transport.close()

    # ------------------------------------------------------------ worker threads
    def _connect(self) -> paramiko.Transport:
        return open_transport(self.target, self._pinned)


class SSHPool:
    """Connections keyed by (center, host, port, login), reused across calls.

    Every center may hold at most `per_center_threads` of the `max_threads` worker
    threads at once (half of them by default), whatever its number of logins: a
    center that hangs leaves threads for the others.
    """

    def __init__(self, *, max_threads: int = 64, per_center_threads: int | None = None) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="hpcfed-ssh"
        )
        self.per_center_threads = per_center_threads or max(1, max_threads // 2)
        self._center_threads: dict[str, asyncio.Semaphore] = {}
        self._connections: dict[tuple[str, str, int, str], SSHConnection] = {}
        #: Set by whoever wants to know of every command (the gateway's metrics).
        self.observe: CommandObserver | None = None

    def open_connections(self) -> dict[str, int]:
        """Center id -> pooled connections whose transport is up now."""
        counts: dict[str, int] = {}
        for conn in self._connections.values():
            transport = conn.transport
            if transport is not None and transport.is_active():
                counts[conn.target.center_id] = counts.get(conn.target.center_id, 0) + 1
        return counts

    def _observed(self, center_id: str, seconds: float, outcome: str) -> None:
        if self.observe is not None:
            self.observe(center_id, seconds, outcome)

    def connection(self, target: SSHTarget) -> SSHConnection:
        conn = self._connections.get(target.pool_key)
        if conn is not None and conn.target == target:
            return conn
        if conn is not None:
            # The center's settings changed (e.g. a new pinned key): start afresh.
            transport = conn.transport
            if transport is not None:
                self._executor.submit(transport.close)
        slots = self._center_threads.setdefault(
            target.center_id, asyncio.Semaphore(self.per_center_threads)
        )
        conn = SSHConnection(target, self._executor, self._observed, slots)
        self._connections[target.pool_key] = conn
        return conn

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        self._executor.shutdown(wait=False)
