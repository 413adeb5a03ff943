"""The application factory: wires config, store, centers, service, poller and routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.api import setup_routes
from gateway.api.keys import CENTERS, CONFIG, POLLER, SERVICE, STORE
from gateway.auth import TokenAuth, auth_middleware
from gateway.centers import build_registry
from gateway.config import LoadedConfig
from gateway.errors import error_middleware
from gateway.poller import Poller
from gateway.service import JobService
from gateway.store import SQLiteJobStore

#: Large enough for a 1 MB script in a JSON body.
MAX_BODY = 4 << 20


def create_app(config: LoadedConfig, auth: TokenAuth) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(auth)], client_max_size=MAX_BODY
    )
    app[CONFIG] = config
    app.cleanup_ctx.append(_resources)
    setup_routes(app)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = SQLiteJobStore(config.data_path(config.gateway.store.path))
    await store.open()
    centers = build_registry(config)
    service = JobService(store, centers, submit_timeout=config.gateway.submit_timeout)
    poller = Poller(
        service,
        interval=config.gateway.poll_interval,
        timeout=max(config.gateway.submit_timeout, 30.0),
    )
    app[STORE], app[CENTERS], app[SERVICE], app[POLLER] = store, centers, service, poller
    poll_task = asyncio.create_task(poller.run(), name="poller")
    try:
        yield
    finally:
        poll_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll_task
        await service.close()
        await centers.close()
        await store.close()
