"""Bounded memory per request, against a real gateway: the job-spec cap
(limits.max_spec) and list pages bounded in bytes (limits.max_page)."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.client import ClientError
from gateway.config import LoadedConfig
from gateway.models import LimitsConfig
from tests.conftest import GatewayFactory, config_with

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
