"""A bare aiohttp server answering the gateway's two read routes with fixed documents.

It is benchmark 3's baseline (benchmarks/api_reads.py): the same JSON documents the
gateway served for `GET /v1/jobs/{id}` and `GET /v1/jobs?limit=100`, with no
authentication, no store and no middleware, serialised per request with aiohttp's
`json_response` as the gateway's handlers do. What it reaches is what aiohttp itself
allows on this machine.

Run as a separate process (the benchmark does so)::

    .venv/bin/python -m benchmarks.bare_server DOC.json

DOC.json is `{"jobs": {id: record, ...}, "list": page}`. The server listens on
127.0.0.1, port 0, prints `bare server listening on URL` and runs until SIGTERM or
SIGINT. `BareServer` starts and stops it from a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from benchmarks.harness import ListeningProcess

LISTENING_RE = re.compile(rb"bare server listening on (\S+)\s")
HOST = "127.0.0.1"


# ------------------------------------------------------------ the server


def make_app(doc: dict[str, Any]) -> web.Application:
    jobs: dict[str, Any] = doc["jobs"]
    page: Any = doc["list"]

    async def get_job(request: web.Request) -> web.Response:
        record = jobs.get(request.match_info["id"])
        if record is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response(record)

    async def list_jobs(request: web.Request) -> web.Response:
        return web.json_response(page)

    app = web.Application()
    app.router.add_get("/v1/jobs/{id}", get_job)
    app.router.add_get("/v1/jobs", list_jobs)
    return app


async def serve(doc: dict[str, Any]) -> None:
    # The same runner and site as `hpcfed serve` (gateway/http/serve.py), defaults included.
    runner = web.AppRunner(make_app(doc), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"bare server listening on http://{HOST}:{port} (pid {os.getpid()})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bare_server",
        description="bare aiohttp server with fixed job documents (benchmark 3's baseline)",
    )
    p.add_argument("doc", type=Path, help='JSON file: {"jobs": {id: record}, "list": page}')
    args = p.parse_args(argv)
    doc = json.loads(args.doc.read_text(encoding="utf-8"))
    asyncio.run(serve(doc))
    return 0


# ------------------------------------------------------------ the process, from a benchmark


class BareServer(ListeningProcess):
    """`python -m benchmarks.bare_server DOC` as a child process: started, stopped."""

    what = "the bare server"
    listening = LISTENING_RE

    def __init__(self, doc: Path, log: Path) -> None:
        super().__init__([sys.executable, "-m", "benchmarks.bare_server", str(doc)], log)
        self.doc = doc

    def __enter__(self) -> BareServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
