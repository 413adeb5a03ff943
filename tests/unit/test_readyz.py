"""/readyz: ready while the store answers, 503 naming the store's error once it does not."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.routes import health
from gateway.http.routes.keys import STORE
from gateway.store.sqlite.jobs import SQLiteJobStore


async def test_readyz_is_503_with_the_store_error_once_the_store_is_closed(
    tmp_path: Path,
) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite")
    await store.open()
    app = web.Application()
    app[STORE] = store
    health.setup_routes(app)
    async with TestClient(TestServer(app)) as client:
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert (await ready.json())["status"] == "ready"
        await store.close()
        gone = await client.get("/readyz")
        body = await gone.json()
    assert gone.status == 503
    assert body["status"] == "not ready" and body["store"]
    assert body["config"] == "loaded"
