"""Job events across replicas on one real PostgreSQL database: a job submitted through
replica A, and each change of it, reaches an SSE client of replica B; a client that
reconnects to A with the id of the last event it saw gets what it missed, and only that."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.client.events import SSEParser
from tests.integration._replicas import replicas
from tests.testbed import Testbed

pytestmark = pytest.mark.integration

#: A liveness bound for a job of a few seconds, far above its run; delays are printed.
JOB_BOUND = 120.0


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
    """(id, event type, data) of an SSE response, as they arrive."""
    parser = SSEParser()
    async for chunk in resp.content.iter_any():
        for event_id, kind, data in parser.feed(chunk):
            assert event_id is not None
            yield int(event_id), kind, json.loads(data)


async def test_a_change_through_one_replica_reaches_the_streams_of_the_other_and_resumes(
    tmp_path: Path, testbed: Testbed, pg_dsn: str
) -> None:
    tag = f"ev{int(time.time())}"
    with replicas(tmp_path, testbed, pg_dsn, tag) as (a, b):
        auth_a = {"Authorization": f"Bearer {a.token('alice')}"}
        auth_b = {"Authorization": f"Bearer {b.token('alice')}"}
        async with aiohttp.ClientSession() as http:
            live = await http.get(f"{b.url}/v1/events", headers=auth_b)
            assert live.status == 200
            spec = {"name": tag, "command": "sleep", "arguments": ["2"], "center": "centera"}
            async with http.post(f"{a.url}/v1/jobs", json=spec, headers=auth_a) as resp:
                answered = time.time()
                assert resp.status in (200, 201, 202), await resp.text()
                job = await resp.json()
            seen: list[tuple[int, dict[str, Any]]] = []
            arrived: list[float] = []
            async with asyncio.timeout(JOB_BOUND):
                async for seq, kind, record in events(live):
                    assert kind == "job" and record["id"] == job["id"]
                    seen.append((seq, record))
                    arrived.append(time.time())
                    if record["terminal"]:
                        break
            live.close()
            delays = [
                t - datetime.fromisoformat(r["updated_at"]).timestamp()
                for t, (_, r) in zip(arrived, seen, strict=True)
            ]
            changes = zip(seen, delays, strict=True)
            print(
                f"replica B saw the job {arrived[0] - answered:.3f} s after A answered its "
                "submission; each change after its write at A: "
                + ", ".join(f"{r['state']} {d:.3f} s" for (_, r), d in changes)
            )
            assert seen[-1][1]["state"] == "COMPLETED"
            assert [s for s, _ in seen] == sorted(s for s, _ in seen)

            # A client that saw only the first event reconnects to A.
            cut = seen[0][0]
            headers = {**auth_a, "Last-Event-ID": str(cut)}
            async with http.get(f"{a.url}/v1/jobs/{job['id']}/events", headers=headers) as one:
                assert one.status == 200
                async with asyncio.timeout(30):
                    replayed = [(s, r) async for s, _, r in events(one)]
            assert replayed == [seen[-1]]  # the newest record, at the id of its change
            async with http.get(f"{a.url}/v1/events", headers=headers) as mine:
                async with asyncio.timeout(30):
                    first = await anext(aiter(events(mine)))
            assert first == (seen[-1][0], "job", seen[-1][1])

            # One that saw the end misses nothing: the job stream ends at once, empty.
            headers = {**auth_a, "Last-Event-ID": str(seen[-1][0])}
            async with http.get(f"{b.url}/v1/jobs/{job['id']}/events", headers=headers) as done:
                assert done.status == 200
                async with asyncio.timeout(30):
                    assert [e async for e in events(done)] == []

            # The query parameter does the same; a bad id is refused naming the field.
            url = f"{a.url}/v1/jobs/{job['id']}/events?last_event_id={cut}"
            async with http.get(url, headers=auth_a) as by_query:
                async with asyncio.timeout(30):
                    assert [(s, r) async for s, _, r in events(by_query)] == [seen[-1]]
            bad = {**auth_a, "Last-Event-ID": "12ab"}
            async with http.get(f"{a.url}/v1/events", headers=bad) as refused:
                assert refused.status == 400
                error = (await refused.json())["error"]
                assert error["field"] == "Last-Event-ID", error
