"""What a hostile client sends, against a real gateway: oversized credentials and
headers, numbers no clock or scheduler takes, lax JSON, commands that look like
options, working directories outside the roots, directives the scheduler refuses.

Each answer is a 4xx in the API's one error shape naming the field, nothing is
stored for a refused job, and no part of a token reaches an answer or a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

from gateway.client.core import ClientError
from gateway.config import LoadedConfig
from gateway.http.routes.keys import KEYRING
from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.integration


async def raw_request(gw: Gateway, head: bytes, body: bytes = b"") -> tuple[int, dict, bytes]:
    """Send bytes as they are (no client library in between); (status, headers, body)."""
    url = URL(gw.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()  # every refusal closes the connection
    finally:
        writer.close()
    header_text, _, content = answer.partition(b"\r\n\r\n")
    lines = header_text.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return status, headers, content


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


# ------------------------------------------------------------ credentials and headers


@pytest.mark.parametrize("size", [100_000, 200_000])
async def test_an_oversized_token_gets_401_in_the_json_shape_and_is_never_logged(
    start_gateway: GatewayFactory,
    local_config: LoadedConfig,
    caplog: pytest.LogCaptureFixture,
    size: int,
) -> None:
    gw = await start_gateway(local_config)
    caplog.set_level(logging.DEBUG)
    token = "eyJ" + secrets.token_urlsafe(size)[: size - 3]
    head = b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
    status, headers, content = await raw_request(gw, head)
    assert status == 401, content[:200]
    assert headers["content-type"].startswith("application/json")
    error = json.loads(content)["error"]
    assert (error["code"], error["field"]) == ("unauthenticated", "Authorization")
    assert "longer than" in error["message"]
    # Not a piece of the token, anywhere: the answer, or any log line of any logger.
    for piece in (token[3:19], token[-16:], token[1000:1016]):
        assert piece not in content.decode()
        assert piece not in logged_text(caplog)
    # The gateway goes on serving.
    async with gw.client() as client:
        assert (await client.list())["jobs"] == []


async def test_other_unreadable_requests_answer_in_the_json_shape_without_echo(
    start_gateway: GatewayFactory,
    local_config: LoadedConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await start_gateway(local_config)
    caplog.set_level(logging.DEBUG)
    secret = secrets.token_hex(16)
    cases = [
        # A header other than Authorization, past the field limit.
        (b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Note: " + secret.encode() * 5000 + b"\r\n", 431),
        # A request line past its limit, carrying a secret in the query.
        (b"GET /v1/jobs?key=" + secret.encode() * 5000 + b" HTTP/1.1\r\nHost: x\r\n", 431),
        # Not HTTP at all.
        (secret.encode() + b"\x00\x01 / HTTP/1.1\r\nHost: x\r\n", 400),
        # A header line that is not a header.
        (b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n" + secret.encode() + b"\r\n", 400),
    ]
    for head, expected in cases:
        status, headers, content = await raw_request(gw, head)
        assert status == expected, (head[:60], content[:200])
        assert headers["content-type"].startswith("application/json")
        error = json.loads(content)["error"]
        assert error["code"] in {"header_too_large", "bad_request"}
        assert secret not in content.decode()
    assert secret not in logged_text(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_signed_token_with_times_beyond_any_clock_gets_401(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    kid, key = gw.app[KEYRING].signing_key()
    auth = local_config.gateway.auth
    now = int(time.time())
    for times in ({"exp": 10**30}, {"exp": 1e300, "iat": now}, {"iat": 10**30, "exp": now + 60}):
        claims = {"iss": auth.issuer, "aud": auth.audience, "sub": "alice", "roles": ["researcher"]}
        token = jwt.encode({**claims, **times}, key, algorithm="EdDSA", headers={"kid": kid})
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{gw.url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            body = await resp.json()
            assert resp.status == 401, body
            assert body["error"]["field"] == "Authorization"


# ------------------------------------------------------------ job specs


async def post_raw(gw: Gateway, body: bytes, content_type: str = "application/json") -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gw.url}/v1/jobs",
            data=body,
            headers={"Authorization": f"Bearer {gw.tokens['alice']}", "Content-Type": content_type},
        ) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e309"])
async def test_non_finite_walltimes_get_422_naming_the_field_and_store_nothing(
    start_gateway: GatewayFactory, local_config: LoadedConfig, number: str
) -> None:
    gw = await start_gateway(local_config)
    body = f'{{"command": "true", "resources": {{"walltime": {number}}}}}'.encode()
    status, answer = await post_raw(gw, body)
    assert (status, answer["error"]["field"]) == (422, "resources.walltime"), answer
    for field, value in (("nodes", number), ("memory_per_node", number)):
        body = f'{{"command": "true", "resources": {{"{field}": {value}}}}}'.encode()
        status, answer = await post_raw(gw, body)
        assert (status, answer["error"]["field"]) == (422, f"resources.{field}"), answer
    async with gw.client() as client:
        assert (await client.list())["jobs"] == []


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"nodes": True}, "resources.nodes"),
        ({"cpus_per_task": "2"}, "resources.cpus_per_task"),
        ({"nodes": 1.5}, "resources.nodes"),
        ({"walltime": "9" * 400}, "resources.walltime"),
        ({"walltime": 10**30}, "resources.walltime"),
        ({"memory_per_node": "9" * 400 + "GiB"}, "resources.memory_per_node"),
        ({"memory_per_node": 10**30}, "resources.memory_per_node"),
    ],
)
async def test_values_of_the_wrong_type_or_beyond_range_get_422_naming_the_field(
    start_gateway: GatewayFactory,
    local_config: LoadedConfig,
    resources: dict[str, Any],
    field: str,
) -> None:
    gw = await start_gateway(local_config)
    status, answer = await post_raw(
        gw, json.dumps({"command": "true", "resources": resources}).encode()
    )
    assert (status, answer["error"]["field"]) == (422, field), answer


async def test_bodies_not_in_utf8_are_refused(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    spec = json.dumps({"command": "true", "center": "local"})
    for body in (spec.encode("utf-16"), spec.encode("utf-16-le"), spec.encode("utf-32")):
        status, answer = await post_raw(gw, body)
        assert status == 400 and answer["error"]["field"] == "(body)", answer
    status, answer = await post_raw(gw, b"\xef\xbb\xbf" + spec.encode())  # a UTF-8 BOM
    assert status == 400, answer
    async with gw.client() as client:
        assert (await client.list())["jobs"] == []


def program_named_like_an_option(name: str) -> Path:
    """A directory (readable by every testbed login) holding an executable `name` that
    prints how it was called."""
    where = Path(tempfile.mkdtemp(prefix="hpcfed-dash-"))
    where.chmod(0o755)
    program = where / name
    program.write_text('#!/bin/sh\necho "ran $(basename "$0") with: $*"\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | 0o044)
    return where


@pytest.mark.parametrize("center", ["local", "centera"])
async def test_a_command_that_starts_with_a_dash_runs_as_the_program_of_that_name(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, center: str
) -> None:
    gw = await start_gateway(testbed_config)
    bin_dir = program_named_like_an_option("-o")
    try:
        async with gw.client() as client:
            job = await client.submit(
                {
                    "command": "-o",
                    "arguments": ["x", "--wrap=y"],
                    "environment": {"PATH": f"{bin_dir}:/usr/bin:/bin"},
                    "center": center,
                }
            )
            done = await client.wait(job["id"], timeout=90)
            assert (done["state"], done["exit_code"]) == ("COMPLETED", 0), done
            assert await client.output(job["id"]) == b"ran -o with: x --wrap=y\n"
            # Without such a program it is not found, as any missing program is.
            job = await client.submit({"command": "--wrap=y", "center": center})
            done = await client.wait(job["id"], timeout=90)
            assert (done["state"], done["exit_code"]) == ("FAILED", 127), done
            assert b"--wrap=y: not found" in await client.output(job["id"], "stderr")
    finally:
        for entry in bin_dir.iterdir():
            entry.unlink()
        bin_dir.rmdir()


# ------------------------------------------------------------ working directories


async def test_staging_in_a_working_dir_outside_the_roots_is_refused(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig
) -> None:
    """alice's roots at centera are her home; bob's home is outside them, even though
    her login can read it. Naming it as the working directory must not let staging
    read from it or write into it."""
    gw = await start_gateway(testbed_config)
    bob_home = os.path.expanduser("~bob")
    async with gw.client() as client:
        refused = [
            {"outputs": [{"source": ".profile"}]},
            {"inputs": [{"upload": True, "destination": "planted"}]},
            {"inputs": [{"source": {"center": "centera", "path": ".profile"}, "destination": "x"}]},
        ]
        for staging in refused:
            spec = {"command": "true", "center": "centera", "working_dir": bob_home, **staging}
            with pytest.raises(ClientError) as caught:
                await client.submit(spec)
            assert caught.value.status == 403, caught.value.body
            assert caught.value.body["code"] == "path_outside_roots"
            assert caught.value.body["field"] == "working_dir"
        # Relative to the home and leaving it is the same.
        with pytest.raises(ClientError) as caught:
            await client.submit(
                {
                    "command": "true",
                    "center": "centera",
                    "working_dir": "../bob",
                    "outputs": [{"source": ".profile"}],
                }
            )
        assert (caught.value.status, caught.value.body["field"]) == (403, "working_dir")
        assert (await client.list())["jobs"] == []
        # Without staging, the job may run wherever its login may.
        job = await client.submit({"command": "pwd", "center": "centera", "working_dir": "/tmp"})
        done = await client.wait(job["id"], timeout=90)
        assert done["state"] == "COMPLETED" and await client.output(job["id"]) == b"/tmp\n"
        # Inside the roots, staging goes on as before.
        result = f"result-{secrets.token_hex(4)}.txt"
        job = await client.submit(
            {
                "script": f"echo kept > {result}\n",
                "center": "centera",
                "working_dir": "~",
                "outputs": [{"source": result}],
            }
        )
        done = await client.wait(job["id"], timeout=90)
        assert done["state"] == "COMPLETED", (done["reason"], done["exit_code"], done["staging"])
        assert done["staging"]["outputs"][0]["size"] == len(b"kept\n")


# ------------------------------------------------------------ scheduler refusals


@pytest.mark.parametrize(
    ("directives", "field"),
    [
        (["--bogus"], "extra_directives.slurm[0]"),
        (["--exclusive", "--time=abc"], "extra_directives.slurm[1]"),
        (["--constraint=nosuchfeature"], "extra_directives.slurm[0]"),
    ],
)
async def test_a_directive_the_scheduler_refuses_is_named(
    start_gateway: GatewayFactory,
    testbed_config: LoadedConfig,
    directives: list[str],
    field: str,
) -> None:
    gw = await start_gateway(testbed_config)
    async with gw.client() as client:
        with pytest.raises(ClientError) as caught:
            await client.submit(
                {
                    "command": "true",
                    "center": "centera",
                    "extra_directives": {"slurm": directives},
                }
            )
        assert caught.value.status == 422, caught.value.body
        assert caught.value.body["code"] == "rejected_by_center"
        assert caught.value.body["field"] == field
        assert caught.value.body["message"].startswith(f"{field}: ")


# ------------------------------------------------------------ HTTP methods


@pytest.mark.parametrize("method", ["TRACE", "PATCH", "PUT"])
async def test_an_undeclared_method_gets_405_with_allow_in_the_json_shape(
    start_gateway: GatewayFactory, local_config: LoadedConfig, method: str
) -> None:
    gw = await start_gateway(local_config)
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"{gw.url}/v1/jobs", headers={"Authorization": f"Bearer {gw.tokens['alice']}"}
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 405, body
        assert body["error"]["code"] == "method_not_allowed"
        assert set(resp.headers["Allow"].split(", ")) == {"GET", "POST"}


# ------------------------------------------------------------ what the document says


async def get(gw: Gateway, path: str, method: str = "GET", **headers: str) -> Any:
    headers["Authorization"] = f"Bearer {gw.tokens['alice']}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, URL(gw.url + path, encoded=True), headers=headers) as resp,
    ):
        body = await resp.read()
        return resp.status, resp.headers, (json.loads(body) if body else None)


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/transfers", "/v1/centers/local/evaluations"])
@pytest.mark.parametrize("limit", ["", "x", "1.5", "+5", " 5", "1_0"])
async def test_every_list_refuses_a_limit_that_is_not_an_integer(
    start_gateway: GatewayFactory, local_config: LoadedConfig, path: str, limit: str
) -> None:
    gw = await start_gateway(local_config)
    status, _, body = await get(gw, f"{path}?limit={limit.replace(' ', '%20').replace('+', '%2B')}")
    assert (status, body["error"]["field"]) == (400, "limit"), body


@pytest.mark.parametrize("cursor", ["%C3%AF", "a.b", "a%20b"])
async def test_a_cursor_outside_the_documented_pattern_is_400(
    start_gateway: GatewayFactory, local_config: LoadedConfig, cursor: str
) -> None:
    gw = await start_gateway(local_config)
    status, _, body = await get(gw, f"/v1/jobs?cursor={cursor}")
    assert (status, body["error"]["field"]) == (400, "cursor"), body


@pytest.mark.parametrize(
    ("since", "ok"),
    [
        ("2026-12-01", True),
        ("2026-12-01T08:00", True),
        ("2026-12-01T08:00:00.5%2B05:30", True),
        ("2026-12-01T08:00Z", True),
        ("9999-12-31T23:59-23:59", True),
        ("20261201", False),
        ("2026-12-01%2008:00", False),
        ("2026-W48-1", False),
    ],
)
async def test_usage_takes_the_documented_times_only(
    start_gateway: GatewayFactory, local_config: LoadedConfig, since: str, ok: bool
) -> None:
    gw = await start_gateway(local_config)
    status, _, body = await get(gw, f"/v1/usage?since={since}&until=2026-01-01")
    assert status == (200 if ok else 400), body
    if not ok:
        assert body["error"]["field"] == "since"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_range_past_the_end_is_416_with_the_files_length(
    start_gateway: GatewayFactory, local_config: LoadedConfig, method: str
) -> None:
    gw = await start_gateway(local_config)
    auth = {"Authorization": f"Bearer {gw.tokens['alice']}"}
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.put(
            f"{gw.url}/v1/centers/local/files/content?path=ten.txt", data=b"0123456789"
        ) as resp,
    ):
        assert resp.status in (200, 201), await resp.text()
    status, headers, body = await get(
        gw, "/v1/centers/local/files/content?path=ten.txt", method, Range="bytes=10-"
    )
    assert status == 416
    assert headers["Content-Range"] == "bytes */10"
    assert headers["Accept-Ranges"] == "bytes"
    if method == "GET":
        assert body["error"]["code"] == "range_not_satisfiable"


async def test_a_whole_float_is_the_integer_and_a_fraction_is_refused(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    resources = b'{"nodes": 1.0, "memory_per_node": 64.0}'
    body = b'{"command": "true", "center": "local", "resources": ' + resources + b"}"
    status, answer = await post_raw(gw, body)
    assert status in (201, 202), answer
    assert (
        answer["spec"]["resources"]["nodes"],
        answer["spec"]["resources"]["memory_per_node"],
    ) == (
        1,
        64,
    )
    status, answer = await post_raw(gw, b'{"command": "true", "resources": {"nodes": 1.5}}')
    assert (status, answer["error"]["field"]) == (422, "resources.nodes"), answer


async def test_an_input_index_that_is_not_ascii_digits_is_400(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        job = await client.submit(
            {"command": "true", "center": "local", "inputs": [{"upload": True, "destination": "x"}]}
        )
    for index in ("%C2%B2", "%D9%A3", "-1", "1x"):  # '²' and '٣' are digits to str.isdigit
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                URL(f"{gw.url}/v1/jobs/{job['id']}/inputs/{index}", encoded=True),
                data=b"x",
                headers={"Authorization": f"Bearer {gw.tokens['alice']}"},
            ) as resp,
        ):
            body = await resp.json()
            assert (resp.status, body["error"]["field"]) == (400, "index"), body


async def test_paths_outside_the_roots_are_403_and_conflicts_409(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    status, _, body = await get(gw, "/v1/centers/local/files/stat?path=%2Fetc%2Fpasswd")
    assert (status, body["error"]["code"]) == (403, "path_outside_roots"), body
    status, _, body = await get(gw, "/v1/centers/local/files?path=.&recursive=true", "DELETE")
    assert (status, body["error"]["code"]) == (409, "path_conflict"), body


async def test_an_empty_usage_interval_has_no_jobs(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    status, _, body = await get(gw, "/v1/usage?since=2026-12-02&until=2026-12-01")
    assert (status, body["totals"]) == (200, []), body


async def test_an_element_the_job_does_not_have_is_404(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    gw = await start_gateway(local_config)
    async with gw.client() as client:
        job = await client.submit({"command": "true", "center": "local"})
        with pytest.raises(ClientError) as caught:
            await client.output(job["id"], element=0)
        assert (caught.value.status, caught.value.body["field"]) == (404, "element")
