"""Job events through a real gateway: the SSE streams, the client, and `hpcfed submit --wait`."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.client.errors import ClientError
from gateway.client.events import SSEParser
from gateway.config import LoadedConfig
from gateway.http.app import create_app
from gateway.http.routes.keys import EVENTS, ISSUER
from gateway.jobs.events import JobEvent
from gateway.jobs.records import JobRecord
from tests.conftest import Gateway, GatewayFactory, config_with, stop_gateway

RANK = {"SUBMITTING": 0, "QUEUED": 1, "HELD": 1, "RUNNING": 2, "COMPLETED": 3}
SLEEP_1 = {"name": "nap", "command": "sleep", "arguments": ["1"], "center": "local"}


class Stream:
    """An open SSE response and the job records it has delivered."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.parser = SSEParser()
        self.ids: list[int] = []

    async def records(self) -> AsyncIterator[dict[str, Any]]:
        async for chunk in self.resp.content.iter_any():
            for event_id, event, data in self.parser.feed(chunk):
                assert event == "job" and event_id is not None
                self.ids.append(int(event_id))
                yield json.loads(data)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def open_stream(
    session: aiohttp.ClientSession, gw: Gateway, user: str, path: str
) -> aiohttp.ClientResponse:
    """The response once its headers are in: the gateway has subscribed by then."""
    headers = {"Authorization": f"Bearer {gw.tokens[user]}"}
    return await session.get(gw.url + path, headers=headers)


def in_lifecycle_order(states: list[str]) -> bool:
    ranks = [RANK[s] for s in states]
    return ranks == sorted(ranks)


async def test_job_stream_delivers_each_state_in_order_and_ends_after_the_terminal_one(
    start_gateway: GatewayFactory, local_config: LoadedConfig, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client("alice") as alice:
        job = await alice.submit(SLEEP_1)
        resp = await open_stream(session, gw, "alice", f"/v1/jobs/{job['id']}/events")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        stream = Stream(resp)
        async with asyncio.timeout(30):
            seen = [r async for r in stream.records()]  # ends only when the gateway ends it
        states = [r["state"] for r in seen]
        assert states[-1] == "COMPLETED" and seen[-1]["terminal"]
        assert "RUNNING" in states and in_lifecycle_order(states), states
        assert not any(r["terminal"] for r in seen[:-1])
        assert stream.ids == sorted(stream.ids)
        assert seen[-1] == await alice.get(job["id"])

        # A job that has ended: its record, then the end of the stream.
        async with asyncio.timeout(10):
            again = [r async for r in alice.events(job["id"])]
        assert [r["state"] for r in again] == ["COMPLETED"]

        async with gw.client("bob") as bob:
            resp = await open_stream(session, gw, "bob", f"/v1/jobs/{job['id']}/events")
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
            assert (await open_stream(session, gw, "bob", f"/v1/jobs/{job['id']}")).status == 404
            with pytest.raises(ClientError) as refused:
                await bob.wait(job["id"], timeout=5)
            assert refused.value.status == 404


async def test_user_stream_sees_both_of_my_jobs_and_none_of_another_users(
    start_gateway: GatewayFactory, local_config: LoadedConfig, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(
        local_config,
        {"alice": ("researcher",), "bob": ("researcher",), "olga": ("operator",)},
    )
    streams = {u: await open_stream(session, gw, u, "/v1/events") for u in ("alice", "bob", "olga")}
    assert {u: r.status for u, r in streams.items()} == {"alice": 200, "bob": 200, "olga": 200}
    async with gw.client("alice") as alice, gw.client("bob") as bob:
        mine = {(await alice.submit(SLEEP_1))["id"] for _ in range(2)}
        theirs = (await bob.submit({**SLEEP_1, "arguments": ["0"]}))["id"]

    async def until_ended(user: str, wanted: set[str]) -> dict[str, list[str]]:
        states: dict[str, list[str]] = collections.defaultdict(list)
        ended: set[str] = set()
        async for record in Stream(streams[user]).records():
            states[record["id"]].append(record["state"])
            if record["terminal"]:
                ended.add(record["id"])
            if ended >= wanted:
                return states
        raise AssertionError(f"{user}'s stream ended early")

    async with asyncio.timeout(30):
        seen_by_alice = await until_ended("alice", mine)
        seen_by_bob = await until_ended("bob", {theirs})
        seen_by_olga = await until_ended("olga", {*mine, theirs})
    assert set(seen_by_alice) == mine
    assert set(seen_by_bob) == {theirs}
    for job_id, states in seen_by_alice.items():
        # The stream was open before the submission: the whole life of the job.
        assert states[0] == "SUBMITTING" and states[-1] == "COMPLETED", states
        assert in_lifecycle_order(states), states
        assert seen_by_olga[job_id] == states
    for resp in streams.values():
        assert not resp.closed  # the user stream stays open
        resp.close()


# ------------------------------------------------------------ the done-when: submit --wait


async def launch_counting(config: LoadedConfig) -> tuple[Gateway, collections.Counter[str]]:
    """A real gateway whose app counts the requests it answers, by route name."""
    app = create_app(config)
    served: collections.Counter[str] = collections.Counter()

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        served[f"{request.method} {request.match_info.route.name}"] += 1

    app.on_response_prepare.append(count)
    app.on_startup.append(_note_terminal_publications)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    tokens = {"alice": app[ISSUER].issue("alice", ("researcher",)).token}
    return Gateway(f"http://127.0.0.1:{port}", app, config, tokens, runner), served


#: When the gateway published each job's terminal record (time.time()), for the report.
PUBLISHED_TERMINAL = web.AppKey("published_terminal", dict[str, float])


async def _note_terminal_publications(app: web.Application) -> None:
    stamps: dict[str, float] = {}
    app[PUBLISHED_TERMINAL] = stamps
    bus = app[EVENTS]
    publish = bus.publish

    def noting(record: JobRecord) -> JobEvent:
        if record.state.is_terminal:
            stamps.setdefault(record.id, time.time())
        return publish(record)

    bus.publish = noting  # type: ignore[method-assign]


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@pytest.mark.integration
async def test_submit_wait_exits_at_the_jobs_end_from_its_events_without_polling(
    testbed_config: LoadedConfig, tmp_path: Path
) -> None:
    config = config_with(testbed_config, testbed_config.data_dir, poll_interval=0.5)
    gw, served = await launch_counting(config)
    try:
        spec = tmp_path / "job.yaml"
        spec.write_text("name: nap3\ncenter: centera\nscript: |\n  sleep 3\n")
        env = {**os.environ, "HPCFED_URL": gw.url, "HPCFED_TOKEN": gw.tokens["alice"]}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "submit",
            str(spec),
            "--wait",
            "--timeout",
            "90",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(120):
            out, err = await proc.communicate()
        exited_at = time.time()
        assert proc.returncode == 0, err.decode()
        job_id, state = out.decode().split()[:2]
        assert state == "COMPLETED"
        async with gw.client("alice") as alice:
            job = await alice.get(job_id)
            # The job's own record of its end (sub-second, from job.sh), read through the
            # files API; squeue's EndTime is cut to the whole second.
            times = io.BytesIO()
            await alice.download("centera", f".hpcfed/jobs/{job_id}/times", times)
        started, ended = (float(t.replace(",", ".")) for t in times.getvalue().decode().split())
        assert ended - started >= 3
        assert abs(ended - _epoch(job["usage"]["ended_at"])) < 1.5
        delay = exited_at - ended
        published = gw.app[PUBLISHED_TERMINAL][job_id] - ended
        print(
            f"hpcfed submit --wait exited {delay:.3f} s after the job's end "
            f"(terminal record published after {published:.3f} s)"
        )
        assert delay >= 0, delay  # the figure is printed; speed belongs to benchmarks/
        assert served["GET jobs.get"] <= 2, served
        assert served["GET jobs.events"] >= 1, served
    finally:
        await stop_gateway(gw)


async def test_open_streams_end_when_the_gateway_stops(
    start_gateway: GatewayFactory, local_config: LoadedConfig, session: aiohttp.ClientSession
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client("alice") as alice:
        job = await alice.submit({**SLEEP_1, "arguments": ["60"]})
    user = await open_stream(session, gw, "alice", "/v1/events")
    one = await open_stream(session, gw, "alice", f"/v1/jobs/{job['id']}/events")
    assert (user.status, one.status) == (200, 200)
    started = time.monotonic()
    async with asyncio.timeout(10):
        await gw.stop()
        assert await user.content.read() == b"" or user.content.at_eof()
        await one.content.read()
    assert time.monotonic() - started < 5


# ------------------------------------------------------------ hpcfed status --watch


async def hpcfed(gw: Gateway, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "HPCFED_URL": gw.url, "HPCFED_TOKEN": gw.tokens["alice"]}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_status_watch_prints_each_change_of_a_job_until_it_ends(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client("alice") as alice:
        job = await alice.submit(SLEEP_1)
    proc = await hpcfed(gw, "status", "--watch", job["id"])
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    states = [line.split()[1] for line in lines]
    assert states[-1] == "COMPLETED" and in_lifecycle_order(states), lines
    assert len(set(lines)) == len(lines)


async def test_status_watch_of_all_jobs_runs_until_interrupted_and_exits_130_quietly(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    proc = await hpcfed(gw, "status", "--watch")
    assert proc.stdout is not None
    lines: asyncio.Queue[str] = asyncio.Queue()

    async def read() -> None:
        assert proc.stdout is not None
        while line := (await proc.stdout.readline()).decode():
            await lines.put(line)

    reader = asyncio.create_task(read())

    async def line_about(job_id: str, state: str, within: float) -> str | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while not (job_id in (line := await lines.get()) and state in line):
                    pass
                return line
        return None

    async with gw.client("alice") as alice:
        for _ in range(20):  # the watcher subscribes some time after it starts
            job = await alice.submit({**SLEEP_1, "arguments": ["0"]})
            if (first := await line_about(job["id"], "", within=1.0)) is not None:
                break
        else:
            raise AssertionError("the watcher printed none of the jobs")
        # A job that ends at once may be first seen ended.
        if "COMPLETED" not in first:
            assert await line_about(job["id"], "COMPLETED", within=30) is not None
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    async with asyncio.timeout(10):
        await reader
        err = await proc.stderr.read()
        await proc.wait()
    assert proc.returncode == 130
    assert err.decode() == ""
