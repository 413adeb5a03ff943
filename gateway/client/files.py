"""Files at the centers (docs/data.md), as methods of `HpcfedClient` (it mixes
`FilesClientMixin` in).

async with HpcfedClient(url, token) as client:
    await client.upload("centera", "data/in.bin", Path("in.bin"), sha256=await sha256_file(...))
    await client.download("centera", "data/in.bin", Path("copy.bin"))

Uploads and downloads stream between the local disk and the gateway in chunks;
no file is ever held whole in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import aiohttp

from gateway.client.errors import ClientError, raise_for

#: Bytes read from disk, or written to it, at a time.
CHUNK = 1024 * 1024

#: Called as bytes move: (bytes of the file done so far, the file's size if known).
Progress = Callable[[int, int | None], None]

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


async def sha256_file(path: Path, progress: Progress | None = None) -> str:
    """The sha256 (hex) of a local file, read in chunks off the event loop."""
    digest = hashlib.sha256()
    size = (await asyncio.to_thread(path.stat)).st_size
    done = 0
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, size)
    return digest.hexdigest()


def _files(center: str, suffix: str = "") -> str:
    return f"/v1/centers/{quote(center, safe='')}/files{suffix}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, complete length) of a Content-Range header, None where absent."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


def _int_header(resp: aiohttp.ClientResponse, name: str) -> int | None:
    value = resp.headers.get(name)
    return int(value) if value is not None and value.isdigit() else None


class FilesClientMixin:
    """The file routes; needs `url`, `session` and `_request` of HpcfedClient."""

    url: str

    if TYPE_CHECKING:

        @property
        def session(self) -> aiohttp.ClientSession: ...

        async def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    # ------------------------------------------------------------ files

    async def roots(self, center: str) -> dict[str, Any]:
        """{"center", "login", "roots": [...]}: where this user's login may work."""
        result: dict[str, Any] = await self._request("GET", _files(center, "/roots"))
        return result

    async def ls(self, center: str, path: str) -> dict[str, Any]:
        """{"path", "entries": [entry...]} of a directory (409 not_a_directory)."""
        result: dict[str, Any] = await self._request("GET", _files(center), params={"path": path})
        return result

    async def stat(self, center: str, path: str) -> dict[str, Any]:
        """One entry: {"name", "path", "type", "size", "mode", "mtime"} (404 file_not_found)."""
        result: dict[str, Any] = await self._request(
            "GET", _files(center, "/stat"), params={"path": path}
        )
        return result

    async def mkdir(self, center: str, path: str, parents: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "POST", _files(center, "/mkdir"), json={"path": path, "parents": parents}
        )
        return result

    async def rm(self, center: str, path: str, recursive: bool = False) -> None:
        await self._request(
            "DELETE", _files(center), params={"path": path, "recursive": _bool(recursive)}
        )

    async def rename(
        self, center: str, path: str, to: str, overwrite: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._request(
            "POST",
            _files(center, "/rename"),
            json={"path": path, "to": to, "overwrite": overwrite},
        )
        return result

    async def checksum(self, center: str, path: str) -> dict[str, Any]:
        """{"path", "size", "sha256"} computed at the center."""
        result: dict[str, Any] = await self._request(
            "GET", _files(center, "/checksum"), params={"path": path}
        )
        return result

    async def download(
        self,
        center: str,
        path: str,
        dest_file: Path | BinaryIO,
        offset: int = 0,
        progress: Progress | None = None,
        verify: bool = False,
    ) -> dict[str, Any]:
        """Stream a file at a center to `dest_file` (a path, or a binary file object
        written from where it stands). With `offset` > 0 the local file is cut there
        and only the rest is fetched (a Range request).

        Answers {"path", "size", "offset", "bytes"}: the remote size, where the
        download started and how many bytes it wrote. With `verify` the sha256 of the
        whole local file (for a resumed download: the part it had, then what came) is
        compared with the one the center computes (`checksum`) and added as "sha256";
        a mismatch raises ClientError `checksum_mismatch`, and a local file (a path)
        is removed first: nobody finds a wrong copy under the file's name.
        """
        local = Path(dest_file) if isinstance(dest_file, (str, os.PathLike)) else None
        if offset and local is not None and not await asyncio.to_thread(local.exists):
            raise _error(0, "bad_offset", f"{dest_file}: no local file to resume")
        digest = hashlib.sha256() if verify else None
        if digest is not None and offset and local is not None:
            await _hash_prefix(local, offset, digest)
        answer = await self._download(center, path, dest_file, offset, progress, digest)
        if digest is None:
            return answer
        remote = await self.checksum(center, path)
        if offset and not answer["offset"] and local is not None:
            # A 200 to the Range request: the file was written again from its start.
            got = await sha256_file(local)
        else:
            got = digest.hexdigest()
        if remote.get("sha256") != got or int(remote.get("size", -1)) != answer["size"]:
            if local is not None:
                await asyncio.to_thread(local.unlink, missing_ok=True)
            raise _error(
                0,
                "checksum_mismatch",
                f"the copy of {center}:{path} ({answer['size']} bytes, sha256 {got}) is not "
                f"the file at the center ({remote.get('size')} bytes, sha256 "
                f"{remote.get('sha256')})"
                + (f"; {local} was removed" if local is not None else "")
                + ": get it again",
            )
        return {**answer, "sha256": got}

    async def _download(
        self,
        center: str,
        path: str,
        dest_file: Path | BinaryIO,
        offset: int,
        progress: Progress | None,
        digest: Any,
    ) -> dict[str, Any]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        url = self.url + _files(center, "/content")
        written = 0
        try:
            async with self.session.get(url, params={"path": path}, headers=headers) as resp:
                if resp.status == 416 and offset:
                    return await self._range_past_end(resp, center, path, offset)
                if resp.status >= 400:
                    await raise_for(resp)
                total = _int_header(resp, "X-File-Size")
                start = 0
                if resp.status == 206:
                    first, complete = _parse_content_range(resp.headers.get("Content-Range"))
                    if first != offset:
                        raise _error(
                            resp.status,
                            "bad_range",
                            f"asked for bytes from {offset}, the gateway sent "
                            f"{resp.headers.get('Content-Range')!r}",
                        )
                    start = offset
                    total = total if total is not None else complete
                elif total is None and resp.content_length is not None:
                    total = resp.content_length
                # A 200 to a Range request is the whole file: write it from the start.
                if progress:
                    progress(start, total)
                out, close = _open_for_write(dest_file, start)
                try:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        await asyncio.to_thread(out.write, chunk)
                        if digest is not None:
                            digest.update(chunk)
                        written += len(chunk)
                        if progress:
                            progress(start + written, total)
                    await asyncio.to_thread(out.flush)
                finally:
                    if close:
                        await asyncio.to_thread(out.close)
        except aiohttp.ClientPayloadError as exc:
            raise _error(
                0,
                "interrupted",
                f"download of {center}:{path} cut off after {offset + written} bytes "
                f"({exc}); it can be resumed",
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise _unreachable(self.url, exc, offset + written) from None
        size = total if total is not None else start + written
        if start + written != size:
            raise _error(
                0,
                "interrupted",
                f"download of {center}:{path} ended at {start + written} of {size} bytes; "
                "it can be resumed",
            )
        return {"path": path, "size": size, "offset": start, "bytes": written}

    async def _range_past_end(
        self, resp: aiohttp.ClientResponse, center: str, path: str, offset: int
    ) -> dict[str, Any]:
        """A 416 to `Range: bytes=offset-`: nothing is missing if the file is `offset`
        bytes long (the local copy is complete); otherwise the error as answered."""
        _, size = _parse_content_range(resp.headers.get("Content-Range"))
        if size is None:
            size = _int_header(resp, "X-File-Size")
        if size is None:
            await resp.read()
            size = int((await self.stat(center, path))["size"])
        if size == offset:
            return {"path": path, "size": size, "offset": offset, "bytes": 0}
        if size < offset:
            raise _error(
                416,
                "offset_past_end",
                f"the local file has {offset} bytes but {center}:{path} only {size}",
            )
        await raise_for(resp)
        raise AssertionError("unreachable")  # pragma: no cover

    async def upload(
        self,
        center: str,
        path: str,
        src_file: Path,
        offset: int = 0,
        overwrite: bool = True,
        sha256: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Stream a local file to a center. With `offset` > 0 the remote file is cut
        there and the local file sent from that byte on (a resumed upload). With
        `sha256` (of the whole local file) the center checks what it wrote (422
        checksum_mismatch). Answers {"path", "size", "sha256"?}."""
        params = {"path": path, "offset": str(offset), "overwrite": _bool(overwrite)}
        return await self._put_file(
            _files(center, "/content"), params, src_file, offset, sha256, progress
        )

    async def upload_job_input(
        self,
        job_id: str,
        index: int,
        src_file: Path,
        sha256: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Stream the local file of a job's `upload: true` input number `index`."""
        route = f"/v1/jobs/{quote(job_id, safe='')}/inputs/{index}"
        return await self._put_file(route, {}, src_file, 0, sha256, progress)

    async def _put_file(
        self,
        route: str,
        params: dict[str, str],
        src_file: Path,
        offset: int,
        sha256: str | None,
        progress: Progress | None,
    ) -> dict[str, Any]:
        size = (await asyncio.to_thread(src_file.stat)).st_size
        if offset < 0 or offset > size:
            raise _error(0, "bad_offset", f"offset {offset} is outside {src_file} ({size} bytes)")
        length = size - offset
        headers = {"Content-Length": str(length), "Content-Type": "application/octet-stream"}
        if sha256:
            headers["X-Checksum-Sha256"] = sha256
        sent = [0]
        body = _read_chunks(src_file, offset, length, sent, progress, size)
        try:
            async with self.session.put(
                self.url + route, params=params, data=body, headers=headers
            ) as resp:
                if resp.status >= 400:
                    await raise_for(resp)
                if resp.content_type == "application/json":
                    result: dict[str, Any] = await resp.json()
                    return result
                await resp.read()
                return {}
        except aiohttp.ClientConnectionError as exc:
            raise _unreachable(self.url, exc, offset + sent[0], upload=True) from None


async def _hash_prefix(path: Path, length: int, digest: Any) -> None:
    """Feed the first `length` bytes of a local file to `digest`."""
    with path.open("rb") as f:
        left = length
        while left > 0 and (chunk := await asyncio.to_thread(f.read, min(CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)


def _open_for_write(dest: Path | BinaryIO, start: int) -> tuple[BinaryIO, bool]:
    """The file to write a download into, cut at `start`; and whether to close it."""
    if isinstance(dest, (str, os.PathLike)):
        path = Path(dest)
        if start and path.exists():
            f: BinaryIO = path.open("r+b")
            f.truncate(start)
            f.seek(start)
        else:
            f = path.open("wb")
        return f, True
    return dest, False


async def _read_chunks(
    path: Path,
    offset: int,
    length: int,
    sent: list[int],
    progress: Progress | None,
    size: int,
) -> AsyncIterator[bytes]:
    """`length` bytes of `path` from `offset`, a chunk at a time."""
    if progress:
        progress(offset, size)
    with path.open("rb") as f:
        f.seek(offset)
        while sent[0] < length:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, length - sent[0]))
            if not chunk:
                raise _error(0, "bad_file", f"{path} shrank while it was being uploaded")
            sent[0] += len(chunk)
            if progress:
                progress(offset + sent[0], size)
            yield chunk


def _unreachable(url: str, exc: BaseException, at: int, *, upload: bool = False) -> Exception:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _error(0, "unreachable", f"cannot reach the gateway at {url}: {exc}")
    what = "upload" if upload else "download"
    return _error(
        0,
        "interrupted",
        f"the connection to {url} broke during the {what}, after {at} bytes ({exc}); "
        "it can be resumed",
    )


def _error(status: int, code: str, message: str) -> Exception:
    return ClientError(status, code, message)
