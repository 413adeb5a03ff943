"""The HTTP API end to end on the embedded local center: a real server, real processes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gateway.client.core import ClientError
from gateway.config import LoadedConfig
from tests.conftest import GatewayFactory, config_with

HELLO = {"name": "hello", "command": "echo", "arguments": ["hi there"], "center": "local"}


async def test_job_runs_and_its_output_is_read_back(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        job = await client.submit(HELLO)
        assert job["center"] == "local" and job["owner"] == "alice"
        done = await client.wait(job["id"], timeout=30)
        assert done["state"] == "COMPLETED"
        assert done["exit_code"] == 0
        assert await client.output(job["id"]) == b"hi there\n"


async def test_non_zero_exit_is_failed_with_its_code(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        job = await client.submit({"script": "echo oops >&2\nexit 7\n", "center": "local"})
        done = await client.wait(job["id"], timeout=30)
        assert (done["state"], done["exit_code"]) == ("FAILED", 7)
        assert await client.output(job["id"], "stderr") == b"oops\n"


async def test_cancel_of_running_job_reaches_cancelled(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        job = await client.submit({"script": "echo started\nsleep 300\n", "center": "local"})
        async with asyncio.timeout(30):
            while await client.output(job["id"]) != b"started\n":
                await asyncio.sleep(0.1)
        await client.cancel(job["id"])
        done = await client.wait(job["id"], timeout=30)
        assert done["state"] == "CANCELLED"


async def test_walltime_overrun_is_timeout(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        spec = {"command": "sleep", "arguments": ["60"], "resources": {"walltime": "1s"}}
        job = await client.submit(spec)
        done = await client.wait(job["id"], timeout=30)
        assert done["state"] == "TIMEOUT"


async def test_hostile_values_are_passed_literally_never_executed(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    hostile = "; touch /tmp/hpcfed-pwned $(id) `id` 'q' \"dq\"\nline2"
    async with gw.client() as client:
        job = await client.submit(
            {"command": "printf", "arguments": ["%s", hostile], "center": "local"}
        )
        done = await client.wait(job["id"], timeout=30)
        assert done["state"] == "COMPLETED"
        assert (await client.output(job["id"])).decode() == hostile
        spec = {"script": 'printf "%s" "$HOSTILE"', "environment": {"HOSTILE": hostile}}
        job = await client.submit(spec)
        await client.wait(job["id"], timeout=30)
        assert (await client.output(job["id"])).decode() == hostile


async def test_users_see_only_their_own_jobs(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client("alice") as alice, gw.client("bob") as bob:
        job = await alice.submit(HELLO)
        for call in (bob.get, bob.cancel, bob.output):
            with pytest.raises(ClientError) as err:
                await call(job["id"])
            assert err.value.status == 404
        assert [j["id"] for j in (await bob.list())["jobs"]] == []
        assert [j["id"] for j in (await alice.list())["jobs"]] == [job["id"]]


async def test_requests_without_a_valid_token_get_401(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
            async with session.get(f"{gw.url}/v1/jobs", headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "unauthenticated"
        async with session.get(f"{gw.url}/healthz") as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"command": "true", "resources": {"memory_per_node": "lots"}},
            "resources.memory_per_node",
        ),
        ({"command": "true", "resources": {"walltime": "-5"}}, "resources.walltime"),
        ({"command": "true", "resources": {"nodes": 0}}, "resources.nodes"),
        ({"command": "true", "environment": {"1BAD": "x"}}, "environment"),
        ({"command": "true", "name": "a b;c"}, "name"),
        ({"command": "true", "center": "../etc"}, "center"),
        ({"command": "true", "surprise": 1}, "surprise"),
        ({"script": "x", "command": "y"}, "(body)"),
        ({"command": "true", "center": "nowhere"}, "center"),
    ],
)
async def test_bad_job_spec_gets_4xx_naming_the_field(
    start_gateway: GatewayFactory, local_config: LoadedConfig, body: dict, field: str
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        with pytest.raises(ClientError) as err:
            await client.submit(body)
    assert 400 <= err.value.status < 500
    assert err.value.body.get("field") == field, err.value.body
    assert err.value.message


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("POST", "/v1/jobs", b"{not json"),
        ("POST", "/v1/jobs", b"[1, 2]"),
        ("POST", "/v1/jobs", b""),
        ("GET", "/v1/jobs?limit=abc", None),
        ("GET", "/v1/jobs?limit=0", None),
        ("GET", "/v1/jobs?state=DANCING", None),
        ("GET", "/v1/jobs?cursor=garbage", None),
        ("GET", "/v1/jobs/not-a-uuid", None),
        ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000/output/stdin", None),
        ("DELETE", "/v1/jobs/00000000-0000-0000-0000-000000000000", None),
        ("PUT", "/v1/jobs", b"{}"),
    ],
)
async def test_malformed_requests_get_4xx_in_the_error_shape(
    start_gateway: GatewayFactory, local_config: LoadedConfig, method: str, path: str, data: bytes
) -> None:
    gw = await start_gateway(local_config)
    headers = {"Authorization": f"Bearer {gw.tokens['alice']}"}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, gw.url + path, data=data, headers=headers) as resp:
            assert 400 <= resp.status < 500
            error = (await resp.json())["error"]
            assert error["code"] and error["message"]


async def test_idempotency_key_returns_the_same_job(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client, gw.client("bob") as bob:
        first = await client.submit(HELLO, idempotency_key="run-42")
        again = await client.submit(HELLO, idempotency_key="run-42")
        other_user = await bob.submit(HELLO, idempotency_key="run-42")
        assert again["id"] == first["id"]
        assert other_user["id"] != first["id"]
        assert len((await client.list())["jobs"]) == 1


async def test_listing_pages_with_a_cursor(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        ids = [(await client.submit(HELLO))["id"] for _ in range(5)]
        seen: list[str] = []
        cursor = None
        while True:
            page = await client.list(limit=2, cursor=cursor)
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))


async def test_follow_streams_output_until_the_job_ends(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        job = await client.submit({"script": "for i in 1 2 3; do echo $i; sleep 0.3; done"})
        received = b""
        async with asyncio.timeout(30):
            async for chunk in client.follow_output(job["id"]):
                received += chunk
        assert received == b"1\n2\n3\n"
        assert (await client.get(job["id"]))["terminal"]


async def test_jobs_survive_a_gateway_restart(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    first = await start_gateway(local_config)
    async with first.client() as client:
        job = await client.submit({"script": "sleep 1; echo after restart"})
    await first.stop()
    second = await start_gateway(local_config)
    async with second.client() as client:
        done = await client.wait(job["id"], timeout=30)
        assert done["state"] == "COMPLETED"
        assert await client.output(job["id"]) == b"after restart\n"


async def test_jobs_of_a_removed_center_are_kept_unknown_and_others_go_on(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    first = await start_gateway(local_config)
    async with first.client() as client:
        stranded = await client.submit({"command": "sleep", "arguments": ["60"]})
    await first.stop()
    local = local_config.centers["local"]
    other = local.model_copy(update={"id": "other"})
    config = config_with(
        local_config, local_config.data_dir, centers={"other": other}, default_center="other"
    )
    second = await start_gateway(config)
    async with second.client() as client:
        fresh = await client.submit({"command": "true"})
        assert (await client.wait(fresh["id"], timeout=30))["state"] == "COMPLETED"
        async with asyncio.timeout(30):
            while (job := await client.get(stranded["id"]))["state"] != "UNKNOWN":
                await asyncio.sleep(0.1)
        assert job["reason"] == "center local is no longer configured"


async def test_a_dependent_job_starts_only_after_its_parent_completed(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        parent = await client.submit({"script": "sleep 1\ndate +%s.%N\n"})
        child = await client.submit(
            {"script": "date +%s.%N\n", "dependencies": [{"job": parent["id"]}]}
        )
        assert child["center"] == parent["center"]
        done = await client.wait(child["id"], timeout=30)
        assert done["state"] == "COMPLETED"
        parent_end = float(await client.output(parent["id"]))
        child_start = float(await client.output(child["id"]))
        assert child_start >= parent_end


async def test_dependencies_that_cannot_hold_are_refused_naming_the_field(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as alice, gw.client("bob") as bob:
        failed = await alice.submit({"command": "false"})
        assert (await alice.wait(failed["id"], timeout=30))["state"] == "FAILED"
        cases = [
            (alice, {"job": failed["id"]}, "dependency_never_met"),
            (bob, {"job": failed["id"], "condition": "afterany"}, "invalid_request"),
            (alice, {"job": "00000000-0000-4000-8000-000000000000"}, "invalid_request"),
        ]
        for client, dep, code in cases:
            with pytest.raises(ClientError) as err:
                await client.submit({"command": "true", "dependencies": [dep]})
            assert (err.value.status, err.value.code) == (422, code)
            assert err.value.body["field"] == "dependencies[0].job"
        after_failure = await alice.submit(
            {"command": "true", "dependencies": [{"job": failed["id"], "condition": "afternotok"}]}
        )
        assert (await alice.wait(after_failure["id"], timeout=30))["state"] == "COMPLETED"


async def test_a_child_whose_parent_fails_later_is_cancelled_with_the_reason(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        parent = await client.submit({"script": "sleep 1\nexit 1\n"})
        child = await client.submit({"command": "true", "dependencies": [{"job": parent["id"]}]})
        done = await client.wait(child["id"], timeout=30)
        assert done["state"] == "CANCELLED"
        assert done["reason"] == "its dependencies can never be satisfied"
        assert await client.output(child["id"]) == b""


async def test_an_array_job_runs_each_element_with_its_own_output(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        job = await client.submit(
            {
                "array": "0-2,7",
                "script": 'echo "element $HPCFED_ARRAY_INDEX"\nexit $((HPCFED_ARRAY_INDEX == 7))\n',
            }
        )
        done = await client.wait(job["id"], timeout=30)
        assert [(e["index"], e["state"], e["exit_code"]) for e in done["elements"]] == [
            (0, "COMPLETED", 0),
            (1, "COMPLETED", 0),
            (2, "COMPLETED", 0),
            (7, "FAILED", 1),
        ]
        assert (done["state"], done["exit_code"]) == ("FAILED", 1)
        for index in (0, 1, 2, 7):
            assert await client.output(job["id"], element=index) == f"element {index}\n".encode()
        with pytest.raises(ClientError) as err:
            await client.output(job["id"])
        assert (err.value.status, err.value.body["field"]) == (400, "element")
        with pytest.raises(ClientError):
            await client.output(job["id"], element=5)
