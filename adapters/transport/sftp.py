"""A center's file system over SSH: SFTP on the pooled paramiko connection for
metadata and small copies, OpenSSH (`adapters.transport.openssh`) for large ones.

Checksums and recursive removal run as commands at the center (`sha256sum`,
`rm -rf`) on paths that are already confined and quoted once; like every remote
command they run under /bin/sh with framed answers (`adapters.transport.framing`), so a
login's chatty startup files change nothing. Reads give exactly the bytes asked
for or an error.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import AsyncIterator

import paramiko

from adapters.errors import CenterUnavailable, CommandFailed
from adapters.files.filesystem import PIECE, FileEntry, entry_type
from adapters.transport.framing import quote
from adapters.transport.openssh import OpenSSH
from adapters.transport.ssh import SSHConnection, SSHPool, SSHTarget

_SHA256_RE = re.compile(rb"^([0-9a-f]{64})\s")
#: The slowest a checksum may run at the center before it counts as hung (bytes/s).
_SHA256_MIN_RATE = 20 << 20


def _entry(path: str, attrs: paramiko.SFTPAttributes) -> FileEntry:
    mode = attrs.st_mode or 0
    return FileEntry(
        name=posixpath.basename(path) or "/",
        path=path,
        type=entry_type(mode),
        size=attrs.st_size or 0,
        mode=mode,
        mtime=float(attrs.st_mtime or 0),
    )


def _write_piece(
    sftp: paramiko.SFTPClient, path: str, offset: int, data: bytes, first: bool
) -> None:
    if first and offset == 0:
        mode = "wb"  # create, or cut to nothing
    else:
        mode = "r+b"
    with sftp.open(path, mode) as fh:
        if first and offset:
            fh.truncate(offset)
        fh.set_pipelined(True)
        fh.seek(offset)
        fh.write(data)


def _read_piece(sftp: paramiko.SFTPClient, path: str, offset: int, length: int) -> bytes:
    with sftp.open(path, "rb") as fh:
        return b"".join(fh.readv([(offset, length)]))


class SFTPFS:
    def __init__(
        self,
        target: SSHTarget,
        pool: SSHPool,
        openssh: OpenSSH | None = None,
        bulk_threshold: int = 8 << 20,
    ) -> None:
        self.target = target
        self._pool = pool
        self.openssh = openssh
        self.bulk_threshold = bulk_threshold

    @property
    def connection(self) -> SSHConnection:
        return self._pool.connection(self.target)

    async def home(self) -> str:
        return await self.connection.home()

    async def realpath(self, path: str) -> str:
        return await self.connection.sftp(lambda s: s.normalize(path))

    async def stat(self, path: str, follow: bool = True) -> FileEntry:
        attrs = await self.connection.sftp(lambda s: s.stat(path) if follow else s.lstat(path))
        return _entry(path, attrs)

    async def listdir(self, path: str) -> list[FileEntry]:
        listed = await self.connection.sftp(lambda s: s.listdir_attr(path))
        return [_entry(posixpath.join(path, a.filename), a) for a in listed]

    async def mkdir(self, path: str) -> None:
        def make(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.mkdir(path, 0o755)
            except OSError as exc:
                if exc.errno is None and _exists(sftp, path):
                    raise FileExistsError(path) from None
                raise

        await self.connection.sftp(make)

    async def rmdir(self, path: str) -> None:
        await self.connection.sftp(lambda s: s.rmdir(path))

    async def unlink(self, path: str) -> None:
        await self.connection.sftp(lambda s: s.remove(path))

    async def remove_tree(self, path: str) -> None:
        await self._command(f"rm -rf -- {quote(path)}", "remove")

    async def rename(self, source: str, target: str) -> None:
        await self.connection.sftp(lambda s: s.posix_rename(source, target))

    async def sha256(self, path: str, size: int) -> str:
        timeout = max(self.target.command_timeout, size / _SHA256_MIN_RATE)
        out = await self._command(f"sha256sum -- {quote(path)}", "sha256sum", timeout)
        match = _SHA256_RE.match(out.lstrip(b"\\"))
        if match is None:
            raise CommandFailed(
                f"center {self.target.center_id}: sha256sum printed no checksum",
                command="sha256sum",
                center=self.target.center_id,
            )
        return match.group(1).decode()

    async def _command(
        self,
        command: str,
        what: str,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> bytes:
        result = await self.connection.run(command, timeout=timeout)
        if result.exit_status != 0:
            said = result.stderr.decode(errors="replace").strip()
            if "No such file" in said:
                raise FileNotFoundError(said)
            if "Permission denied" in said:
                raise PermissionError(said)
            raise CommandFailed(
                f"center {self.target.center_id}: {what} failed (exit {result.exit_status}): "
                f"{said[:300]}",
                command=what,
                exit_status=result.exit_status,
                stderr=said,
                center=self.target.center_id,
            )
        return result.stdout

    async def read(self, path: str, offset: int, length: int) -> AsyncIterator[bytes]:
        if self.openssh is not None and length >= self.bulk_threshold:
            async for block in self.openssh.read(self.target, path, offset, length):
                yield block
            return
        end = offset + length
        while offset < end:
            want = min(PIECE, end - offset)
            block = await self.connection.sftp(
                lambda s, o=offset, n=want: _read_piece(s, path, o, n)
            )
            if not block or len(block) > want:
                # Fewer bytes than the size the caller was told: an error, never a short file.
                raise CenterUnavailable(
                    f"center {self.target.center_id}: {path}: the file gave "
                    f"{length - (end - offset) + len(block)} of {length} bytes",
                    center=self.target.center_id,
                )
            offset += len(block)
            yield block

    async def write(
        self, path: str, offset: int, chunks: AsyncIterator[bytes], size_hint: int | None
    ) -> int:
        if self.openssh is not None and (size_hint is None or size_hint >= self.bulk_threshold):
            return await self.openssh.write(self.target, path, offset, chunks)
        written, first = 0, True
        pending: list[bytes] = []
        buffered = 0

        async def flush() -> None:
            nonlocal written, first, buffered
            data = b"".join(pending)
            pending.clear()
            buffered = 0
            at, is_first = offset + written, first
            await self.connection.sftp(lambda s: _write_piece(s, path, at, data, is_first))
            written += len(data)
            first = False

        async for chunk in chunks:
            pending.append(chunk)
            buffered += len(chunk)
            if buffered >= PIECE:
                await flush()
        if pending or first:
            await flush()
        return written


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
        return True
    except FileNotFoundError:
        return False
