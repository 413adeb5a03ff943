"""Bulk data over OpenSSH's own `ssh` client, with the gateway's pinned host keys.

A single paramiko stream moves a fraction of what OpenSSH does on the same
link (its ciphers and windows run in Python), so large copies are piped
through `ssh <center> 'dd if=...'` or `'dd of=...'` (GNU dd) instead, run under
/bin/sh with framed answers like every remote command (`adapters.transport.framing`).
How `ssh` is run (no configuration of the user's, pinned host keys only, the key in a
private agent) is `adapters.transport.openssh_setup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import AsyncIterator

from adapters.errors import AuthenticationFailed, CenterUnavailable, CommandFailed, HostKeyRejected
from adapters.transport import framing
from adapters.transport.connect import SSHTarget
from adapters.transport.framing import quote
from adapters.transport.openssh_setup import OpenSSHSetup, base_env

log = logging.getLogger(__name__)

_READ = 1 << 20
_STDERR_LIMIT = 1 << 16


def available() -> bool:
    """Whether OpenSSH's client and agent are installed here."""
    return all(shutil.which(tool) for tool in ("ssh", "ssh-agent", "ssh-add"))


class OpenSSH(OpenSSHSetup):
    """Reads and writes of whole byte ranges at a center through `ssh` and GNU dd."""

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
                env=base_env(),
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
