"""Bounded memory, against a real gateway: the job-spec cap (limits.max_spec), list
pages bounded in bytes (limits.max_page), and the resident memory of a real
`hpcfed serve` under one user's largest submissions and lists."""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from pathlib import Path

import aiohttp
import pytest

from adapters.base import JobState
from gateway.client.core import ClientError
from gateway.config import LoadedConfig, load_config
from gateway.config_models import LimitsConfig
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord
from gateway.store.sqlite.jobs import SQLiteJobStore
from gateway.units import utcnow
from tests.conftest import GatewayFactory, config_with
from tests.integration._served import served
from tests.testbed import Testbed

pytestmark = pytest.mark.integration

MIB = 1 << 20


def script_of(size: int) -> str:
    """A batch script of `size` bytes that does nothing."""
    head, tail = "#!/bin/bash\n: ", "\ntrue\n"
    return head + "x" * (size - len(head) - len(tail)) + tail


async def test_a_spec_over_the_cap_is_413_naming_its_largest_part(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        for spec, field in (
            ({"script": script_of(MIB + 1)}, "script"),
            ({"command": "env", "environment": {"BIG": "y" * MIB}}, "environment"),
            ({"command": "echo", "arguments": ["z" * 60_000] * 20}, "arguments"),
        ):
            with pytest.raises(ClientError) as caught:
                await client.submit({**spec, "center": "local"})
            assert (caught.value.status, caught.value.body["code"]) == (413, "spec_too_large")
            assert caught.value.body["field"] == field
        batch = {"jobs": [{"command": "true"}, {"script": script_of(MIB + 1)}]}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{gw.url}/v1/jobs/batch",
                json=batch,
                headers={"Authorization": f"Bearer {gw.tokens['alice']}"},
            ) as resp,
        ):
            body = await resp.json()
        assert (resp.status, body["error"]["field"]) == (413, "jobs[1].script"), body
        assert (await client.list())["jobs"] == []  # nothing stored
        # Just under the cap is accepted.
        job = await client.submit({"script": script_of(MIB - 1024), "center": "local"})
        assert job["id"]


async def test_a_page_ends_early_past_max_page_and_the_cursor_reaches_every_record(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    config = config_with(local_config, local_config.data_dir, limits=LimitsConfig(max_page=1))
    gw = await start_gateway(config)
    async with gw.client() as client:
        ids = set()
        for _ in range(5):
            ids.add((await client.submit({"script": script_of(400_000), "center": "local"}))["id"])
        page = await client.list(limit=1000)
        assert len(page["jobs"]) == 2 and page["next_cursor"], len(page["jobs"])
        seen = {j["id"] for j in page["jobs"]}
        while page["next_cursor"]:
            page = await client.list(limit=1000, cursor=page["next_cursor"])
            assert 1 <= len(page["jobs"]) <= 2
            seen |= {j["id"] for j in page["jobs"]}
        assert seen == ids


#: The bound the gateway's resident memory must stay under, whatever one user sends.
RSS_BOUND_MIB = 300


def maximal_body() -> bytes:
    """A request body at the body limit (4 MiB) whose spec is at limits.max_spec
    (1 MiB): a script of newlines (two bytes each in JSON), padded with JSON spaces."""
    script = "#!/bin/bash\n" + "\n" * (MIB - 4096)
    raw = json.dumps({"name": "memprobe", "center": "centera", "script": script}).encode()
    return raw + b" " * (4 * MIB - 1024 - len(raw))


def peak_rss_mib(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) >> 10
    raise AssertionError(f"no VmHWM for {pid}")


def seed_finished(config: Path, owner: str, count: int) -> None:
    """`count` ended jobs of `owner`, each with a script at limits.max_spec, in the
    store of the gateway `config` describes, before it starts."""

    async def seed() -> None:
        loaded = load_config(config)
        store = SQLiteJobStore(loaded.data_path(loaded.gateway.store.path))
        await store.open()
        try:
            now = utcnow()
            spec = JobSpec(script="#!/bin/bash\n: " + "x" * (MIB - 64), center="centera")
            for start in range(0, count, 50):
                await store.insert_many(
                    [
                        JobRecord(
                            id=str(uuid.uuid4()),
                            owner=owner,
                            center="centera",
                            login=owner,
                            spec=spec,
                            state=JobState.COMPLETED,
                            exit_code=0,
                            created_at=now,
                            updated_at=now,
                            finished_at=now,
                        )
                        for _ in range(start, min(count, start + 50))
                    ]
                )
        finally:
            await store.close()

    asyncio.run(seed())


async def walk_jobs(session: aiohttp.ClientSession, url: str) -> int:
    """Every job of the token's user, 1000 a page as asked (the byte bound may end a
    page sooner); how many."""
    seen, cursor = 0, None
    while True:
        query = "?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        async with session.get(f"{url}/v1/jobs{query}") as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        seen += len(page["jobs"])
        cursor = page["next_cursor"]
        if not cursor:
            return seen


def test_rss_stays_bounded_under_concurrent_maximal_specs_and_1000_record_lists(
    testbed: Testbed, tmp_path: Path
) -> None:
    """One researcher sends 30 maximal submissions at once, three times, and reads
    1000-record lists of maximal records meanwhile: a real `hpcfed serve` stays under
    RSS_BOUND_MIB of resident memory all along (its high-water mark)."""
    with served(tmp_path, testbed, "memprobe") as gateway:
        seed_finished(gateway.config, "alice", 1000)
        url, token = gateway.start(), gateway.token()
        assert gateway.proc is not None
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = maximal_body()

        async def load() -> list[int]:
            async with aiohttp.ClientSession(headers=headers) as session:

                async def submit() -> int:
                    async with session.post(f"{url}/v1/jobs", data=body) as resp:
                        await resp.read()
                        return resp.status

                statuses, listed = [], []
                for _ in range(3):
                    answers = await asyncio.gather(
                        *(submit() for _ in range(30)), walk_jobs(session, url)
                    )
                    statuses += answers[:-1]
                    listed += await asyncio.gather(walk_jobs(session, url), walk_jobs(session, url))
                async with session.get(f"{url}/v1/usage") as resp:  # every ended job, billed
                    assert resp.status == 200, await resp.text()
                return [*statuses, *listed]

        answers = asyncio.run(load())
        statuses, listed = answers[:90], answers[90:]
        assert set(statuses) == {201}, collections.Counter(statuses)
        assert listed == [1030, 1030, 1060, 1060, 1090, 1090]
        peak = peak_rss_mib(gateway.proc.pid)
        print(f"peak RSS {peak} MiB (bound {RSS_BOUND_MIB} MiB)")
        assert peak < RSS_BOUND_MIB, f"peak RSS {peak} MiB"
