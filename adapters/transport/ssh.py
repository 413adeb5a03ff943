"""Pooled SSH connections to centers: pinned host keys, timeouts, SFTP.

One paramiko `Transport` per (center, host, port, login) carries every exec
and SFTP channel to that login. All blocking paramiko work runs in worker
threads, bounded per connection by `max_sessions` (OpenSSH's MaxSessions caps
channels per connection). A transport found dead is dropped and the next call
reconnects; a call is retried only when it failed before its command could
have reached the center.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextvars
import hashlib
import logging
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import paramiko

from adapters.context import REQUEST_ID
from adapters.errors import AuthenticationFailed, CenterUnavailable, HostKeyRejected
from adapters.transport import framing
from adapters.transport.keys import Credential

log = logging.getLogger(__name__)
T = TypeVar("T")

# A pinned key's type -> the host key algorithms that can prove it. paramiko no
# longer accepts SHA-1 "ssh-rsa" signatures, so RSA keys negotiate rsa-sha2-*.
HOST_KEY_ALGORITHMS = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
_READ_SIZE = 1 << 16
_CHANNEL_RETRY_DELAYS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 0.0)
_SFTP_WINDOW = 1 << 26  # a large window keeps downloads from stalling on round trips
# After a failed connect the next attempt waits base * 2**(n-1) seconds (jittered, capped);
# calls in between fail at once, so an outage costs no burst of handshakes.
_RECONNECT_BASE, _RECONNECT_CAP = 0.25, 5.0
#: Told of every command run: (center id, seconds, outcome "ok" / "failed" / "unavailable").
CommandObserver = Callable[[str, float, str], None]


@dataclass(frozen=True)
class SSHTarget:
    center_id: str
    host: str
    port: int
    login: str
    credential: Credential  # where the login's private key comes from
    host_keys: tuple[str, ...]  # pinned, "ssh-ed25519 AAAA..." (type + base64, comment allowed)
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    keepalive_interval: float = 15.0
    max_sessions: int = 8

    @property
    def pool_key(self) -> tuple[str, str, int, str]:
        return (self.center_id, self.host, self.port, self.login)


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode()
    return "SHA256:" + digest.rstrip("=")


def parse_pinned_key(line: str) -> tuple[str, bytes]:
    """'ssh-ed25519 AAAA... comment' -> (type, blob), checking the blob names the same type."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"pinned host key must be 'type base64', got {line[:40]!r}")
    key_type = parts[0]
    if key_type not in HOST_KEY_ALGORITHMS:
        raise ValueError(f"pinned host key type {key_type} is not supported")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (name_len,) = struct.unpack(">I", blob[:4])
        blob_type = blob[4 : 4 + name_len].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"pinned {key_type} host key is not valid base64 key data") from exc
    if blob_type != key_type:
        raise ValueError(f"pinned host key says {key_type} but its data is a {blob_type} key")
    return key_type, blob


def _close_late_transport(connecting: concurrent.futures.Future[paramiko.Transport]) -> None:
    """A connect that finished after its caller gave up: close what it opened."""
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()


class _NotSent(Exception):
    """Opening the channel failed: the command never reached the center."""


class SSHConnection:
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
            _head(command),
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
            except _NotSent as exc:
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
            except _NotSent as exc:
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
    def _unavailable(self, what: str) -> CenterUnavailable:
        t = self.target
        return CenterUnavailable(
            f"center {t.center_id}: {t.login}@{t.host}:{t.port}: {what}", center=t.center_id
        )

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
        t = self.target
        try:
            sock = socket.create_connection((t.host, t.port), timeout=t.connect_timeout)
        except OSError as exc:
            raise self._unavailable(f"cannot connect: {exc.strerror or exc}") from None
        # Nagle plus delayed ACKs costs ~40 ms per request/response round trip.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = t.connect_timeout
            transport.handshake_timeout = t.connect_timeout
            transport.auth_timeout = t.connect_timeout
            algorithms: list[str] = []
            for key_type, _ in self._pinned:
                algorithms += [a for a in HOST_KEY_ALGORITHMS[key_type] if a not in algorithms]
            transport.get_security_options().key_types = tuple(algorithms)
            self._handshake(transport)
            self._authenticate(transport)
            transport.set_keepalive(max(1, round(t.keepalive_interval)))
        except BaseException:
            transport.close()
            raise
        log.info("center %s: connected to %s:%s as %s", t.center_id, t.host, t.port, t.login)
        return transport

    def _handshake(self, transport: paramiko.Transport) -> None:
        t = self.target
        try:
            transport.start_client(timeout=t.connect_timeout)
        except paramiko.ssh_exception.IncompatiblePeer as exc:
            if "host key" in str(exc):
                types = ", ".join(sorted({k for k, _ in self._pinned}))
                raise HostKeyRejected(
                    f"center {t.center_id}: the server offers no host key of the pinned "
                    f"type ({types}); refusing to connect",
                    center=t.center_id,
                ) from None
            raise self._unavailable(f"SSH negotiation failed: {exc}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._unavailable(f"SSH handshake failed: {exc or type(exc).__name__}") from None
        # start_client returns quietly when its timeout passes mid-negotiation (a server
        # that accepts and never answers): no key was exchanged, the center is not there.
        if not transport.is_active() or not transport.initial_kex_done:
            raise self._unavailable(f"SSH handshake timed out after {t.connect_timeout:g}s")
        server_key = transport.get_remote_server_key()
        blob = server_key.asbytes()
        if not any(blob == pinned for _, pinned in self._pinned):
            seen = fingerprint(blob)
            raise HostKeyRejected(
                f"center {t.center_id}: host key {seen} ({server_key.get_name()}) is not "
                "pinned in the center config; refusing to connect",
                center=t.center_id,
                fingerprint=seen,
            )

    def _authenticate(self, transport: paramiko.Transport) -> None:
        t = self.target
        # Loaded for this handshake only: the key is not kept between connects.
        key = t.credential.load(t.center_id)
        try:
            transport.auth_publickey(t.login, key)
        except paramiko.AuthenticationException as exc:
            raise AuthenticationFailed(
                f"center {t.center_id}: {t.login}@{t.host}:{t.port} refused the key from "
                f"{t.credential.label} ({key.get_name()} {key.fingerprint}): {exc}",
                center=t.center_id,
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._unavailable(f"authentication did not complete: {exc}") from None
        finally:
            del key

    def _open_channel(
        self, transport: paramiko.Transport, window_size: int | None = None
    ) -> paramiko.Channel:
        # sshd frees a finished session only after it has reaped the child and processed
        # our close, so a channel opened right after another closed can briefly exceed
        # MaxSessions. Nothing was sent yet: waiting a little and asking again is safe.
        refused: Exception | None = None
        for delay in _CHANNEL_RETRY_DELAYS:
            try:
                return transport.open_session(
                    window_size=window_size, timeout=self.target.connect_timeout
                )
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not transport.is_active():
                    raise _NotSent(str(exc) or type(exc).__name__) from None
                # A refusal (ChannelException); or its bare "Unable to open channel.", as
                # paramiko keeps one pending error per transport and a concurrent opener
                # may have taken ours.
                refused = exc
            time.sleep(delay)  # a worker thread, never the event loop
        raise self._unavailable(f"session refused: {refused}")

    def _start(
        self, transport: paramiko.Transport, command: str, window_size: int | None = None
    ) -> paramiko.Channel:
        """Open a channel and start `command` on it, asking again while the server declines."""
        declined: Exception | None = None
        for delay in _CHANNEL_RETRY_DELAYS:
            chan = self._open_channel(transport, window_size)
            try:
                chan.exec_command(command)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                chan.close()
                if not transport.is_active():
                    self._forget(transport)
                    raise self._unavailable(
                        f"connection lost while starting a command; its outcome is unknown: {exc}"
                    ) from None
                # On a live connection sshd answers an exec it did not start with a failure
                # before anything else: the command did not run, so asking again is safe.
                declined = exc
                log.debug("center %s: exec declined (%s)", self.target.center_id, exc)
                time.sleep(delay)
                continue
            with self._count_lock:
                self.commands_run += 1
            return chan
        raise self._unavailable(f"the server declined to start the command: {declined}")

    def _exec(
        self, transport: paramiko.Transport, command: str, stdin: bytes | None, limit: float
    ) -> CommandResult:
        deadline = time.monotonic() + limit
        mark = framing.new_mark()
        # Without stdin the command reads /dev/null: no EOF is sent after a command starts,
        # as paramiko may put it on the wire after its reply to the server's close of a
        # quick command, and sshd drops the whole connection for an EOF on a freed channel.
        chan = self._start(transport, framing.wrap(command, mark, stdin=stdin is not None))
        try:
            chan.settimeout(limit)
            try:
                if stdin is not None:  # read to its end by the command, so no close can race it
                    chan.sendall(stdin)
                    chan.shutdown_write()
                stdout, stderr = self._collect(chan, deadline)
            except TimeoutError:
                raise self._unavailable(f"command did not finish within {limit:g}s") from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not transport.is_active():
                    self._forget(transport)
                raise self._unavailable(
                    f"connection lost while a command ran; its outcome is unknown: {exc}"
                ) from None
            if not transport.is_active() and chan.exit_status == -1:
                self._forget(transport)
                raise self._unavailable("connection lost while a command ran; outcome unknown")
            return self._unframed(command, mark, chan.exit_status, stdout, stderr)
        finally:
            chan.close()

    def _unframed(
        self, command: str, mark: bytes, exit_status: int, stdout: bytes, stderr: bytes
    ) -> CommandResult:
        """The command's own answer, cut out of what the login session printed."""
        t = self.target
        framed = framing.unframe(stdout, stderr, mark)
        if framed is None and exit_status == -1:
            # No exit status at all: the session was killed (sshd gone, a signal), which
            # says nothing about the login environment.
            raise self._unavailable(
                f"{_head(command, 60)}: the session ended without an exit status before any "
                "answer; the command's outcome is unknown"
            )
        if framed is None:
            why = f"the session ended with exit {exit_status} before it started"
            raise framing.broken(t.center_id, t.login, stdout, stderr, why)
        if framed.noise:
            self._noticed(framed.noise)
        if framed.exit_status is None:
            raise self._unavailable(
                f"{_head(command, 60)}: the answer was cut off before its end (session exit "
                f"{exit_status}); the command's outcome is unknown"
            )
        return CommandResult(framed.exit_status, framed.stdout, framed.stderr)

    def _noticed(self, noise: bytes) -> None:
        """What the login environment prints around every answer: told once per login."""
        said = framing.excerpt(noise.strip())
        if not said:
            return
        first, self.login_noise = self.login_noise is None, said
        if first:  # it may change from call to call (dates, counts): logged once
            log.info(
                "center %s: the login environment of %s prints %r around every command; "
                "it is set aside",
                self.target.center_id,
                self.target.login,
                said,
                extra={"center": self.target.center_id, "login": self.target.login},
            )

    @staticmethod
    def _collect(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
        # Read stdout and stderr together so neither can fill its window and stall the other.
        out: list[bytes] = []
        err: list[bytes] = []
        wake = chan.fileno()
        while True:
            while chan.recv_ready():
                out.append(chan.recv(_READ_SIZE))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(_READ_SIZE))
            if chan.eof_received or chan.closed:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            select.select([wake], [], [], min(remaining, 1.0))
        while chan.recv_ready():
            out.append(chan.recv(_READ_SIZE))
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(_READ_SIZE))
        if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError
        return b"".join(out), b"".join(err)

    def _with_sftp(
        self, transport: paramiko.Transport, fn: Callable[[paramiko.SFTPClient], T]
    ) -> T:
        client = self._sftp_client(transport)
        try:
            return fn(client)
        except TimeoutError:
            raise self._unavailable("SFTP request timed out") from None
        except (paramiko.SSHException, EOFError) as exc:
            if not transport.is_active():
                self._forget(transport)
            raise self._unavailable(f"SFTP failed: {exc}") from None
        except OSError as exc:
            if transport.is_active():
                raise  # a file error (missing, denied, ...) for the caller to judge
            self._forget(transport)
            raise self._unavailable(f"connection lost during SFTP: {exc}") from None
        finally:
            client.close()

    def _sftp_client(self, transport: paramiko.Transport) -> paramiko.SFTPClient:
        """An SFTP session: the sftp subsystem; or, once a login's startup files turn out
        to print into it, the sftp-server started by /bin/sh behind a start mark."""
        if self.sftp_via_shell is None:
            chan = self._open_channel(transport, _SFTP_WINDOW)
            try:
                chan.settimeout(self.target.command_timeout)
                chan.invoke_subsystem("sftp")
                return paramiko.SFTPClient(chan)
            except paramiko.sftp.SFTPError as exc:
                # sshd starts an external sftp-server through the login shell: what a
                # startup file prints on stdout lands in the SFTP stream ("Garbage packet").
                # What it printed is quoted once SFTP through /bin/sh shows all of it.
                chan.close()
                self.sftp_via_shell = f"SFTP subsystem: {exc}"
                self._sftp_warned = False
            except (paramiko.SSHException, EOFError, OSError) as exc:
                chan.close()
                if not transport.is_active():
                    raise self._unavailable(f"SFTP subsystem failed to start: {exc}") from None
                # The subsystem ended before it spoke (a startup file that exits, say):
                # an sftp-server started by /bin/sh behind a start mark tells why.
                self.sftp_via_shell, self._sftp_warned = f"SFTP subsystem: {exc}", False
                try:
                    return self._sftp_through_shell(transport)
                except framing.LoginEnvironmentBroken:
                    raise
                except CenterUnavailable as why:
                    self.sftp_via_shell = None  # the subsystem is asked again next time
                    raise self._unavailable(
                        f"SFTP subsystem failed to start: {exc}; {why.message}"
                    ) from None
        return self._sftp_through_shell(transport)

    def _sftp_through_shell(self, transport: paramiko.Transport) -> paramiko.SFTPClient:
        mark = framing.new_mark()
        chan = self._start(transport, framing.wrap_sftp_server(mark), _SFTP_WINDOW)
        try:
            chan.settimeout(self.target.connect_timeout)
            # sftp-server says nothing before the client's INIT: the start mark is the
            # last byte before the protocol, so everything up to it can be read and dropped.
            seen = b""
            while not seen.endswith(mark + b"\n"):
                piece = chan.recv(_READ_SIZE)
                if not piece:
                    err = _drain(chan, stderr=True)
                    if mark + b" sh\n" in seen:  # sh ran: the login environment is fine
                        said = framing.split_stderr(err, mark)[1] or err
                        raise self._unavailable(
                            f"SFTP cannot start: {framing.excerpt(said.strip())}"
                        )
                    why = f"the session ended (exit {chan.exit_status}) before an sftp-server ran"
                    raise framing.broken(self.target.center_id, self.target.login, seen, err, why)
                seen += piece
                if len(seen) > framing.MAX_PREAMBLE:
                    raise framing.broken(
                        self.target.center_id, self.target.login, seen, b"", "no start mark"
                    )
            if not self._sftp_warned:
                self._sftp_warned = True
                preamble = framing.excerpt(seen[: seen.find(mark)].strip())
                self.sftp_via_shell = preamble or self.sftp_via_shell
                log.warning(
                    "center %s: the login environment of %s prints %r into the sftp "
                    "subsystem, which breaks SFTP; SFTP runs an sftp-server under /bin/sh "
                    "from now on",
                    self.target.center_id,
                    self.target.login,
                    self.sftp_via_shell,
                    extra={"center": self.target.center_id, "login": self.target.login},
                )
            chan.settimeout(self.target.command_timeout)
            return paramiko.SFTPClient(chan)
        except TimeoutError:
            chan.close()
            raise self._unavailable("SFTP through /bin/sh did not start in time") from None
        except (paramiko.SSHException, paramiko.sftp.SFTPError, EOFError, OSError) as exc:
            chan.close()
            raise self._unavailable(
                f"SFTP failed to start (the login environment prints "
                f"{self.sftp_via_shell!r} into the sftp subsystem): {exc}"
            ) from None
        except BaseException:
            chan.close()
            raise


def _drain(chan: paramiko.Channel, stderr: bool = False, wait: float = 0.2) -> bytes:
    """What a channel has to say within `wait` seconds (for an error message)."""
    got = b""
    end = time.monotonic() + wait
    ready = chan.recv_stderr_ready if stderr else chan.recv_ready
    recv = chan.recv_stderr if stderr else chan.recv
    while time.monotonic() < end and len(got) < 4096:
        if ready():
            got += recv(4096)
        elif chan.closed or chan.eof_received:
            break
        else:
            time.sleep(0.01)  # a worker thread, never the event loop
    return got


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


def _head(command: str, limit: int = 160) -> str:
    """A command shortened for a log line."""
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."
