"""`hpcfed serve`: the gateway's application on a TCP site until SIGINT or SIGTERM.

The one way into gateway.http from outside it: the command line's `serve` calls
`run()` and imports nothing else of the server, so every other command (a client of
the API) loads no server code.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from aiohttp import web

from gateway.config import LoadedConfig
from gateway.http.app import create_app
from gateway.http.server import GatewayRunner


def run(config: LoadedConfig, host: str, port: int, url_file: Path) -> None:
    """Serve `config`'s gateway on host:port (0: a free port) until a signal. Once it
    listens, its URL is written to `url_file` (removed on the way out) and a line
    `hpcfed gateway listening on URL` printed. Raises VaultError before serving when
    the vault cannot be opened."""
    app = create_app(config)
    asyncio.run(_serve(app, config, host, port, url_file))


async def _serve(
    app: web.Application, config: LoadedConfig, host: str, port: int, url_file: Path
) -> None:
    runner = GatewayRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    url = f"http://{host}:{bound}"
    await asyncio.to_thread(url_file.write_text, url + "\n", "utf-8")
    print(f"hpcfed gateway listening on {url} (data in {config.data_dir})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(url_file.unlink, True)
        await runner.cleanup()
