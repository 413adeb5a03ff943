"""Bulk data over OpenSSH's own `ssh` client, with the gateway's pinned host keys.

A single paramiko stream moves a fraction of what OpenSSH does on the same
link (its ciphers and windows run in Python), so large copies are piped
through `ssh <center> 'dd if=...'` or `'dd of=...'` (GNU dd) instead, run under
/bin/sh with framed answers like every remote command (`adapters.transport.framing`). Nothing of the
user's configuration is read (`-F /dev/null`); the host key must be one pinned
in the center config (a known_hosts file written here, `StrictHostKeyChecking
yes`); the login's private key is handed to a private `ssh-agent` on stdin and
never written to disk, and is dropped from it after `KEY_LIFETIME` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from adapters.batch.jobdir import quote
from adapters.errors import AuthenticationFailed, CenterUnavailable, CommandFailed, HostKeyRejected
from adapters.transport import framing
from adapters.transport.connect import SSHTarget
from adapters.transport.hostkeys import host_key_algorithms, parse_pinned_key
from adapters.transport.keys import parse_private_key

log = logging.getLogger(__name__)

KEY_LIFETIME = 600  # seconds a key stays in the agent
_READ = 1 << 20
_STDERR_LIMIT = 1 << 16


def available() -> bool:
    return all(shutil.which(tool) for tool in ("ssh", "ssh-agent", "ssh-add"))


class OpenSSH:
    """One private ssh-agent and the files `ssh` needs, for every center and login."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self._parent = run_dir
        self._dir: Path | None = None
        self._agent: asyncio.subprocess.Process | None = None
        self._agent_lock = asyncio.Lock()
        self._added: dict[str, float] = {}  # public key file -> when its key was added

    async def close(self) -> None:
        agent, self._agent = self._agent, None
        if agent is not None and agent.returncode is None:
            agent.terminate()
            with contextlib.suppress(ProcessLookupError):
                await agent.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._added.clear()

    # ------------------------------------------------------------ set-up

    def _workdir(self) -> Path:
        if self._dir is None:
            if self._parent is not None:
                self._parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._dir = Path(tempfile.mkdtemp(prefix="ssh-", dir=self._parent))
            self._dir.chmod(0o700)
        return self._dir

    async def _agent_socket(self) -> str:
        sock = self._workdir() / "agent.sock"
        if self._agent is not None and self._agent.returncode is None:
            return str(sock)
        async with self._agent_lock:
            if self._agent is None or self._agent.returncode is not None:
                sock.unlink(missing_ok=True)
                self._added.clear()
                self._agent = await asyncio.create_subprocess_exec(
                    "ssh-agent",
                    "-D",
                    "-a",
                    str(sock),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                assert self._agent.stdout is not None
                # With -D the agent prints its environment lines once it listens.
                await asyncio.wait_for(self._agent.stdout.readline(), 10)
        return str(sock)

    async def _identity(self, target: SSHTarget) -> tuple[str, str]:
        """(agent socket, public key file) with the login's key loaded in the agent."""
        sock = await self._agent_socket()
        name = f"{target.center_id}-{target.login}"
        pub = self._workdir() / f"{name}.pub"
        added = self._added.get(str(pub))
        if added is not None and time.monotonic() - added < KEY_LIFETIME - 60:
            return sock, str(pub)
        data = await asyncio.to_thread(target.credential.material, target.center_id)
        try:
            key = parse_private_key(data)
        except Exception as exc:
            raise AuthenticationFailed(
                f"center {target.center_id}: {target.credential.label} is not a usable key "
                f"({type(exc).__name__})",
                center=target.center_id,
            ) from None
        pub.write_text(f"{key.get_name()} {key.get_base64()}\n", encoding="ascii")
        proc = await asyncio.create_subprocess_exec(
            "ssh-add",
            "-q",
            "-t",
            str(KEY_LIFETIME),
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**_base_env(), "SSH_AUTH_SOCK": sock},
        )
        _, err = await proc.communicate(data)
        del data
        if proc.returncode != 0:
            raise AuthenticationFailed(
                f"center {target.center_id}: the SSH agent refused {target.credential.label}: "
                f"{err.decode(errors='replace').strip()[:200]}",
                center=target.center_id,
            )
        self._added[str(pub)] = time.monotonic()
        return sock, str(pub)

    def _known_hosts(self, target: SSHTarget) -> tuple[str, str]:
        """(known_hosts file, host key algorithms) for the target's pinned keys."""
        path = self._workdir() / f"known_hosts-{target.center_id}"
        types = [parse_pinned_key(line)[0] for line in target.host_keys]
        lines = [
            f"{target.center_id} {key_type} {line.split()[1]}"
            for key_type, line in zip(types, target.host_keys, strict=True)
        ]
        algorithms = host_key_algorithms(types)
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text(encoding="ascii") != text:
            path.write_text(text, encoding="ascii")
        return str(path), ",".join(algorithms)

    async def argv(self, target: SSHTarget, remote_command: str) -> list[str]:
        sock, pub = await self._identity(target)
        known_hosts, algorithms = self._known_hosts(target)
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": known_hosts,
            "GlobalKnownHostsFile": "/dev/null",
            "HostKeyAlias": target.center_id,
            "HostKeyAlgorithms": algorithms,
            "UpdateHostKeys": "no",
            "IdentityAgent": sock,
            "IdentitiesOnly": "yes",
            "IdentityFile": pub,
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "ConnectTimeout": str(max(1, round(target.connect_timeout))),
            "ServerAliveInterval": str(max(1, round(target.keepalive_interval))),
            "ServerAliveCountMax": "3",
            "ControlMaster": "no",
            "ControlPath": "none",
            "Compression": "no",
            "LogLevel": "ERROR",
        }
        argv = ["ssh", "-F", "/dev/null", "-T", "-x", "-a"]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        argv += ["-p", str(target.port), "-l", target.login, target.host, "--", remote_command]
        return argv

    # ------------------------------------------------------------ streams

    async def read(
        self, target: SSHTarget, path: str, offset: int, length: int
    ) -> AsyncIterator[bytes]:
        """Exactly `length` bytes of `path` from `offset`, as they arrive, or an error.

        The answer is framed (`adapters.transport.framing`): what the login's startup files print
        is set aside, and the last bytes are held back until the end mark shows that dd
        ended well and exactly `length` bytes came: a reader never gets all the bytes
        it expects unless they are the file's."""
        # One process reading in 1 MiB blocks (GNU dd's byte-counted skip and count).
        command = (
            f"dd if={quote(path)} bs=1M skip={offset} count={length} "
            "iflag=skip_bytes,count_bytes status=none"
        )
        mark = framing.new_mark()
        proc, stdout, pipe = await self._start_reading(
            target, framing.wrap(command, mark, stdin=False)
        )
        unframer = framing.StreamUnframer(mark)
        got = 0
        held = b""  # the body's last bytes, given out once the end is verified

        def take(body: bytes) -> bytes:
            nonlocal got, held
            got += len(body)
            if got > length:
                raise self._wrong_length(target, path, f"more than the {length} bytes asked")
            held += body
            # Everything but the last byte may go: the reader cannot take it for complete.
            out, held = held[: max(0, len(held) - 1)], held[max(0, len(held) - 1) :]
            return out

        try:
            while True:
                block = await stdout.read(_READ)
                if not block:
                    break
                try:
                    body = unframer.feed(block)
                except ValueError:  # a MiB of output and no start mark
                    await _stop(proc)
                    raise framing.broken(
                        target.center_id, target.login, unframer.printed, b"", "no start mark"
                    ) from None
                if body and (out := take(body)):
                    yield out
            rest = unframer.finish()
            if rest and (out := take(rest)):
                yield out
            await self._finish(target, proc, "read", mark, unframer)
            if got != length:
                raise self._wrong_length(target, path, f"{got} of {length} bytes")
            if held:
                yield held
        finally:
            pipe.close()
            await _stop(proc)

    @staticmethod
    def _wrong_length(target: SSHTarget, path: str, what: str) -> CenterUnavailable:
        return CenterUnavailable(
            f"center {target.center_id}: {path}: the copy from the center gave {what}; "
            "nothing of it is to be trusted",
            center=target.center_id,
        )

    async def write(
        self, target: SSHTarget, path: str, offset: int, chunks: AsyncIterator[bytes]
    ) -> int:
        """Cut `path` at `offset` and write the chunks from there; bytes written. The
        file's size at the center afterwards must be `offset` + the bytes sent."""
        # dd without conv=notrunc cuts the file at the seek point, then writes; the size
        # it leaves is told back (wc -c of a regular file is a stat, not a read).
        command = (
            f"dd of={quote(path)} bs=1M seek={offset} oflag=seek_bytes status=none && "
            f"wc -c < {quote(path)}"
        )
        mark = framing.new_mark()
        proc, stdin = await self._start_writing(target, framing.wrap(command, mark, stdin=True))
        written = 0
        try:
            async for chunk in chunks:
                stdin.write(chunk)
                await stdin.drain()
                written += len(chunk)
            stdin.close()
            said = await self._finish(target, proc, "write", mark)
        except (BrokenPipeError, ConnectionResetError):
            await self._finish(target, proc, "write", mark)
            raise CenterUnavailable(
                f"center {target.center_id}: {path}: the copy stopped after {written} bytes",
                center=target.center_id,
            ) from None
        finally:
            stdin.close()
            await _stop(proc)
        size = said.strip()
        if not size.isdigit() or int(size) != offset + written:
            raise CenterUnavailable(
                f"center {target.center_id}: {path}: {offset + written} bytes were to be "
                f"there after the copy, the center has {size.decode(errors='replace')[:20]!r}",
                center=target.center_id,
            )
        return written

    async def _spawn(
        self, target: SSHTarget, command: str, ours: int, theirs: int, *, reading: bool
    ) -> asyncio.subprocess.Process:
        """`ssh` running `command` with `theirs` as its stdout (reading) or stdin; that
        end is closed here once the child holds it, and `ours` too if the start fails."""
        devnull = asyncio.subprocess.DEVNULL
        try:
            argv = await self.argv(target, command)
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=devnull if reading else theirs,
                stdout=theirs if reading else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_base_env(),
            )
        except BaseException:
            os.close(ours)
            raise
        finally:
            os.close(theirs)

    async def _start_reading(
        self, target: SSHTarget, command: str
    ) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.BaseTransport]:
        """`ssh` running `command`, a reader of its stdout, and that pipe's transport."""
        ours, theirs = _wide_pipe()
        proc = await self._spawn(target, command, ours, theirs, reading=True)
        reader = asyncio.StreamReader(limit=_READ)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(ours, "rb", buffering=0)
        )
        return proc, reader, transport

    async def _start_writing(
        self, target: SSHTarget, command: str
    ) -> tuple[asyncio.subprocess.Process, asyncio.StreamWriter]:
        """`ssh` running `command`, and a writer to its stdin."""
        theirs, ours = _wide_pipe(reading=False)
        proc = await self._spawn(target, command, ours, theirs, reading=False)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
            os.fdopen(ours, "wb", buffering=0),
        )
        transport.set_write_buffer_limits(high=_READ)
        return proc, asyncio.StreamWriter(transport, protocol, None, loop)

    async def _finish(
        self,
        target: SSHTarget,
        proc: asyncio.subprocess.Process,
        what: str,
        mark: bytes,
        unframer: framing.StreamUnframer | None = None,
    ) -> bytes:
        """Wait for `ssh` to end and judge its framed answer: the body of its stdout (of
        a writer; a reader's went through `unframer`), or an error."""
        assert proc.stderr is not None
        reading = [_read_to_end(proc.stderr)]
        if unframer is None and proc.stdout is not None:
            reading.append(_read_to_end(proc.stdout))
        raw_err, out = [*await asyncio.gather(*reading), b""][:2]
        code = await proc.wait()
        cid = target.center_id
        err = raw_err.decode(errors="replace").strip()
        if code == 255 and "Host key verification failed" in err:
            raise HostKeyRejected(
                f"center {cid}: host key is not pinned in the center config; refusing to connect",
                center=cid,
            )
        if code == 255 and "Permission denied" in err:
            raise AuthenticationFailed(
                f"center {cid}: {target.login}@{target.host}:{target.port} refused the key from "
                f"{target.credential.label}",
                center=cid,
            )
        if unframer is not None:
            started, status, noise = unframer.started, unframer.exit_status, unframer.printed
            body = b""
        else:
            parts = framing.split_stdout(out, mark)
            started = parts is not None
            status = parts[2] if parts is not None else None
            body = parts[1] if parts is not None else b""
            noise = out
        if not started:
            if code == 255:
                raise CenterUnavailable(f"center {cid}: ssh failed: {err[:300]}", center=cid)
            raise framing.broken(cid, target.login, noise, raw_err, f"ssh exit {code}")
        if status is None:
            raise CenterUnavailable(
                f"center {cid}: the {what} was cut off before its end (ssh exit {code}): "
                f"{err[:300]}; its outcome is unknown",
                center=cid,
            )
        if status == 0:
            return body
        said = framing.split_stderr(raw_err, mark)[1].decode(errors="replace").strip()
        raise CommandFailed(
            f"center {cid}: {what} failed (exit {status}): {said[:300]}",
            command=what,
            exit_status=status,
            stderr=said,
            center=cid,
        )


async def _read_to_end(stream: asyncio.StreamReader) -> bytes:
    """A stream to its end, keeping its first `_STDERR_LIMIT` bytes."""
    kept = b""
    while block := await stream.read(_READ):
        if len(kept) < _STDERR_LIMIT:
            kept += block[: _STDERR_LIMIT - len(kept)]
    return kept


def _wide_pipe(reading: bool = True) -> tuple[int, int]:
    """A pipe with a 1 MiB buffer instead of Linux's 64 KiB: a quarter of the wake-ups
    per byte between the gateway and its `ssh`. Returns (read end, write end); the
    gateway's end is non-blocking and not inherited."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or over the user's limit
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _READ)
    os.set_blocking(read_end if reading else write_end, False)
    return read_end, write_end


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _base_env() -> dict[str, str]:
    """What `ssh` needs of the gateway's environment; no agent of the user's."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "USER")}
