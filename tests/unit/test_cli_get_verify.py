"""`hpcfed get` checks the sha256 of what it downloaded against the center's.

The CLI runs as its own process against a small HTTP server that answers the two
routes it uses (content, checksum) the way the gateway does, except that the bytes
it serves are not the file's: what a download path that loses or adds bytes would do.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

FILE = b"the file at the center\n" * 1000
SERVED = b"Welcome to Center A\n" + FILE[: -len(b"Welcome to Center A\n")]  # same length


async def _server(served: bytes) -> AsyncIterator[str]:
    async def content(request: web.Request) -> web.Response:
        return web.Response(
            body=served,
            content_type="application/octet-stream",
            headers={"X-File-Size": str(len(FILE)), "Accept-Ranges": "bytes"},
        )

    async def checksum(request: web.Request) -> web.Response:
        digest = hashlib.sha256(FILE).hexdigest()
        return web.json_response(
            {"path": request.query["path"], "size": len(FILE), "sha256": digest}
        )

    app = web.Application()
    app.router.add_get("/v1/centers/{center}/files/content", content)
    app.router.add_get("/v1/centers/{center}/files/checksum", checksum)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(params=[SERVED, FILE], ids=["wrong-bytes", "right-bytes"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, bytes]]:
    async for url in _server(request.param):
        yield url, request.param


async def _get(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HPCFED_URL": url, "HPCFED_TOKEN": "t", "HPCFED_DATA_DIR": str(cwd)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "get",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out, err)


async def test_get_keeps_a_verified_file_and_removes_one_whose_sha256_differs(
    server: tuple[str, bytes], tmp_path: Path
) -> None:
    url, served = server
    result = await _get(url, tmp_path, "centera:data/out.bin")
    copy = tmp_path / "out.bin"
    if served == FILE:
        assert result.returncode == 0, result.stderr.decode()
        assert copy.read_bytes() == FILE
        assert hashlib.sha256(FILE).hexdigest() in result.stdout.decode()
    else:
        assert result.returncode == 1
        said = result.stderr.decode()
        assert "checksum_mismatch" in said or "is not the file at the center" in said
        assert "removed" in said
        assert not copy.exists() and list(tmp_path.glob("out.bin*")) == []


async def test_get_to_stdout_fails_when_the_sha256_differs(
    server: tuple[str, bytes], tmp_path: Path
) -> None:
    url, served = server
    result = await _get(url, tmp_path, "centera:data/out.bin", "-")
    assert result.stdout == served  # written as it came
    assert result.returncode == (0 if served == FILE else 1)
