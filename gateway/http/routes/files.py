"""Files at a center: list, stat, mkdir, remove, rename, download, upload, checksum.

Every path is a query parameter (or a JSON field) confined to the caller's
roots at that center (`adapters.files.paths`); data is streamed both ways.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from email.utils import formatdate

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import AdapterError
from adapters.files.access import CenterFiles
from gateway.errors import DomainError
from gateway.fields import PATH_SCHEMA
from gateway.http.audit import AUDIT_TARGET
from gateway.http.auth import PRINCIPAL, add_route
from gateway.http.errors import domain_response
from gateway.http.metrics import METRICS
from gateway.http.params import body_as, bool_query, int_query
from gateway.http.routes.keys import CENTERS

log = logging.getLogger("hpcfed.files")

CONTENT_ROUTE = "/v1/centers/{center}/files/content"
#: How much of an upload body is read at a time.
BODY_CHUNK = 1 << 20
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}\Z")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)\Z")
CHECKSUM_HEADER = "X-Checksum-Sha256"


class MkdirRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    path: str = Field(max_length=8192, json_schema_extra=PATH_SCHEMA)
    parents: bool = False


class RenameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    path: str = Field(max_length=8192, json_schema_extra=PATH_SCHEMA)
    to: str = Field(max_length=8192, json_schema_extra=PATH_SCHEMA)
    overwrite: bool = False


def files_of(request: web.Request) -> CenterFiles:
    center = request.app[CENTERS].get(request.match_info["center"])
    center.require_available()
    return center.files_for(request[PRINCIPAL].user)


def path_query(request: web.Request, default: str | None = None) -> str:
    path = request.query.get("path", default)
    if path is None:
        raise DomainError("invalid_request", "path: is required", field="path")
    return path


def flag(request: web.Request, name: str, default: bool) -> bool:
    return bool_query(request, name) if request.query.get(name) else default


def expected_sha256(request: web.Request) -> str | None:
    value = request.headers.get(CHECKSUM_HEADER)
    if value is None:
        return None
    if not SHA256_RE.match(value.strip()):
        raise DomainError(
            "invalid_request",
            f"{CHECKSUM_HEADER}: must be 64 hexadecimal digits",
            field=CHECKSUM_HEADER,
        )
    return value.strip().lower()


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) (end exclusive) of a `Range: bytes=...` header; None without one, and
    None for a range whose END is before its START: RFC 9110 14.1.1 calls that range
    invalid and 14.2 lets a server ignore it, so the whole file is sent (as nginx and
    Apache do), and every range the API's pattern admits gets the file or a 416."""
    if header is None:
        return None
    match = _RANGE_RE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        raise DomainError(
            "invalid_request",
            "Range: must be 'bytes=START-', 'bytes=START-END' or 'bytes=-SUFFIX' (one range)",
            field="Range",
        )
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        if last and int(last) < start:
            return None
        end = min(size, int(last) + 1) if last else size
    if start >= size:
        raise DomainError(
            "range_not_satisfiable",
            f"Range: starts at {start}, but the file holds {size} bytes",
            field="Range",
            size=size,
        )
    return start, end


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(BODY_CHUNK):
        yield chunk


# ------------------------------------------------------------ handlers


async def roots(request: web.Request) -> web.Response:
    files = files_of(request)
    return web.json_response(
        {"center": files.center_id, "login": files.login, "roots": await files.roots()}
    )


async def list_dir(request: web.Request) -> web.Response:
    full, entries, truncated = await files_of(request).listdir(path_query(request, "."))
    return web.json_response(
        {"path": full, "entries": [e.public() for e in entries], "truncated": truncated}
    )


async def stat_path(request: web.Request) -> web.Response:
    entry = await files_of(request).stat(path_query(request))
    return web.json_response(entry.public())


async def checksum(request: web.Request) -> web.Response:
    files, path = files_of(request), path_query(request)
    digest, size = await files.sha256(path)
    return web.json_response({"path": await files.resolve(path), "size": size, "sha256": digest})


async def mkdir(request: web.Request) -> web.Response:
    wanted = await body_as(request, MkdirRequest)
    files = files_of(request)
    request[AUDIT_TARGET] = {"center": files.center_id, "path": wanted.path}
    entry, created = await files.mkdir(wanted.path, wanted.parents)
    return web.json_response(entry.public(), status=201 if created else 200)


async def rename(request: web.Request) -> web.Response:
    wanted = await body_as(request, RenameRequest)
    files = files_of(request)
    request[AUDIT_TARGET] = {"center": files.center_id, "path": wanted.path, "to": wanted.to}
    entry = await files.rename(wanted.path, wanted.to, wanted.overwrite)
    return web.json_response(entry.public())


async def remove(request: web.Request) -> web.Response:
    files, path = files_of(request), path_query(request)
    request[AUDIT_TARGET] = {"center": files.center_id, "path": path}
    await files.remove(path, flag(request, "recursive", False))
    return web.Response(status=204)


async def download(request: web.Request) -> web.StreamResponse:
    files, path = files_of(request), path_query(request)
    full, entry = await files.open_read(path)
    try:
        wanted = byte_range(request.headers.get("Range"), entry.size)
    except DomainError as exc:
        if exc.code != "range_not_satisfiable":
            raise
        # RFC 9110 15.5.17: a 416 says the current length of the file.
        response = domain_response(exc)
        response.headers["Content-Range"] = f"bytes */{entry.size}"
        response.headers["Accept-Ranges"] = "bytes"
        return response
    start, end = wanted or (0, entry.size)
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "X-File-Size": str(entry.size),
        "Last-Modified": _http_date(entry.mtime),
    }
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
    response = web.StreamResponse(status=206 if wanted else 200, headers=headers)
    response.content_length = end - start
    if request.method == "HEAD":
        await response.prepare(request)
        return response
    await response.prepare(request)
    try:
        async with contextlib.aclosing(files.read(full, start, end - start)) as chunks:
            async for chunk in chunks:
                await response.write(chunk)
                request.app[METRICS].count_bytes("download", len(chunk))
    except (AdapterError, OSError) as exc:
        # The status line is sent: all that is left is to cut the answer short, so the
        # client sees fewer bytes than announced and resumes with a Range.
        log.warning("download of %s at %s cut short: %s", path, files.center_id, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def check_sha256(files: CenterFiles, full: str, expected: str) -> tuple[str, int]:
    """The sha256 and size of a file just written, computed at the center;
    `checksum_mismatch` when the sha256 is not the one the client sent. The file is
    kept either way, so the upload can be resumed or repeated."""
    digest, size = await files.sha256(full)
    if digest != expected:
        raise DomainError(
            "checksum_mismatch",
            f"{CHECKSUM_HEADER}: the file at the center has sha256 {digest}, not "
            f"{expected}; it is kept, so the upload can be resumed or repeated",
            field=CHECKSUM_HEADER,
            center=files.center_id,
            size=size,
            sha256=digest,
        )
    return digest, size


async def upload(request: web.Request) -> web.Response:
    files, path = files_of(request), path_query(request)
    offset = int_query(request, "offset", 0, 0, 1 << 62)
    overwrite = flag(request, "overwrite", True)
    expected = expected_sha256(request)
    request[AUDIT_TARGET] = {"center": files.center_id, "path": path, "offset": offset}
    full, existed = await files.open_write(path, offset, overwrite)
    written = await files.write(
        full, body_chunks(request), offset, request.content_length, shown=path
    )
    request.app[METRICS].count_bytes("upload", written)
    body: dict[str, object] = {"path": full, "size": offset + written}
    if expected is not None:
        digest, size = await check_sha256(files, full, expected)
        body.update(sha256=digest, size=size)
    return web.json_response(body, status=200 if existed else 201)


def _http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


def setup_routes(app: web.Application) -> None:
    base = "/v1/centers/{center}/files"
    for method, path, handler, name, permission in (
        ("GET", base + "/roots", roots, "files.roots", "files.read"),
        ("GET", base, list_dir, "files.list", "files.read"),
        ("GET", base + "/stat", stat_path, "files.stat", "files.read"),
        ("GET", base + "/checksum", checksum, "files.checksum", "files.read"),
        ("GET", CONTENT_ROUTE, download, "files.download", "files.read"),
        ("HEAD", CONTENT_ROUTE, download, "files.head", "files.read"),
        ("PUT", CONTENT_ROUTE, upload, "files.upload", "files.write"),
        ("POST", base + "/mkdir", mkdir, "files.mkdir", "files.write"),
        ("POST", base + "/rename", rename, "files.rename", "files.write"),
        ("DELETE", base, remove, "files.remove", "files.write"),
    ):
        add_route(app, method, path, handler, name=name, permission=permission)
