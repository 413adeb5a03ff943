"""The worker-thread half of a pooled connection (`adapters.transport.ssh.SSHConnection`):
the channels it opens on its transport, one framed command's run on one
(`adapters.transport.framing`), and SFTP sessions, through the sftp subsystem or,
where a login's startup files print into it, an sftp-server under /bin/sh. All of
it blocks: it runs in the connection's worker threads, never on the event loop.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import paramiko

from adapters.errors import CenterUnavailable
from adapters.transport import framing
from adapters.transport.connect import SSHTarget, unavailable

#: What a connection does is logged under one name (docs/metrics.md).
log = logging.getLogger("adapters.transport.ssh")
T = TypeVar("T")

_READ_SIZE = 1 << 16
_CHANNEL_RETRY_DELAYS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 0.0)
_SFTP_WINDOW = 1 << 26  # a large window keeps downloads from stalling on round trips


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned, the login session's framing taken off."""

    exit_status: int
    stdout: bytes
    stderr: bytes


class NotSent(Exception):
    """Opening the channel failed: the command never reached the center."""


class ChannelWork:
    """Channels, commands and SFTP sessions on a transport, in a worker thread. The
    connection supplies the state below and `_forget`, which drops a dead transport."""

    target: SSHTarget
    commands_run: int
    _count_lock: threading.Lock  # guards commands_run
    login_noise: str | None
    sftp_via_shell: str | None
    _sftp_warned: bool

    def _forget(self, transport: paramiko.Transport) -> None:
        raise NotImplementedError

    def _unavailable(self, what: str) -> CenterUnavailable:
        return unavailable(self.target, what)

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
                    raise NotSent(str(exc) or type(exc).__name__) from None
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
                f"{head(command, 60)}: the session ended without an exit status before any "
                "answer; the command's outcome is unknown"
            )
        if framed is None:
            why = f"the session ended with exit {exit_status} before it started"
            raise framing.broken(t.center_id, t.login, stdout, stderr, why)
        if framed.noise:
            self._noticed(framed.noise)
        if framed.exit_status is None:
            raise self._unavailable(
                f"{head(command, 60)}: the answer was cut off before its end (session exit "
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
                    err = drain(chan, stderr=True)
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


def drain(chan: paramiko.Channel, stderr: bool = False, wait: float = 0.2) -> bytes:
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


def head(command: str, limit: int = 160) -> str:
    """A command shortened for a log line."""
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."
