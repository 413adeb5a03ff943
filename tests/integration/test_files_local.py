"""The file API at the embedded local center: a real server and real files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import LoadedConfig
from tests.conftest import Gateway, GatewayFactory


class Files:
    def __init__(self, gw: Gateway, session: aiohttp.ClientSession) -> None:
        self.gw, self.session = gw, session
        self.base = f"{gw.url}/v1/centers/local/files"

    async def call(
        self, method: str, op: str = "", **kwargs: Any
    ) -> tuple[int, dict[str, Any] | bytes]:
        url = self.base + (f"/{op}" if op else "")
        async with self.session.request(method, url, **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.read()


@pytest.fixture
async def files(start_gateway: GatewayFactory, local_config: LoadedConfig) -> AsyncIterator[Files]:
    gw = await start_gateway(local_config)
    headers = {"Authorization": f"Bearer {gw.tokens['alice']}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Files(gw, session)


def _home(files: Files) -> Path:
    return files.gw.config.data_dir / "local-files"


async def test_upload_list_download_and_checksum_agree(files: Files) -> None:
    data = os.urandom(9 << 20)  # above the bulk threshold, read in pieces
    status, body = await files.call(
        "PUT",
        "content",
        params={"path": "in.bin"},
        data=data,
        headers={"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()},
    )
    assert status == 201, body
    status, listing = await files.call("GET", params={"path": "."})
    assert status == 200
    assert isinstance(listing, dict)
    assert [(e["name"], e["type"], e["size"]) for e in listing["entries"]] == [
        ("in.bin", "file", len(data))
    ]
    status, got = await files.call("GET", "content", params={"path": "in.bin"})
    assert (status, got) == (200, data)
    status, body = await files.call("GET", "checksum", params={"path": "in.bin"})
    assert isinstance(body, dict) and body["sha256"] == hashlib.sha256(data).hexdigest()
    status, again = await files.call(
        "PUT", "content", params={"path": "in.bin", "overwrite": "false"}, data=b"x"
    )
    assert status == 409 and isinstance(again, dict)
    assert again["error"]["code"] == "file_exists"


async def test_directories_are_made_renamed_and_removed_with_clear_refusals(
    files: Files,
) -> None:
    assert (await files.call("POST", "mkdir", json={"path": "a/b"}))[0] == 404
    assert (await files.call("POST", "mkdir", json={"path": "a/b", "parents": True}))[0] == 201
    assert (await files.call("POST", "mkdir", json={"path": "a/b", "parents": True}))[0] == 200
    status, body = await files.call("POST", "mkdir", json={"path": "a/b"})
    assert status == 409 and isinstance(body, dict) and body["error"]["code"] == "file_exists"
    await files.call("PUT", "content", params={"path": "a/b/f.txt"}, data=b"hello")
    status, body = await files.call("GET", params={"path": "a/b/f.txt"})
    assert status == 409 and isinstance(body, dict)
    assert body["error"]["code"] == "not_a_directory"
    status, body = await files.call("POST", "rename", json={"path": "a", "to": "a/b/c"})
    assert status == 409 and isinstance(body, dict) and body["error"]["field"] == "to"
    assert (await files.call("POST", "rename", json={"path": "a", "to": "z"}))[0] == 200
    assert (_home(files) / "z/b/f.txt").read_bytes() == b"hello"
    status, body = await files.call("DELETE", params={"path": "z"})
    assert status == 409 and isinstance(body, dict)
    assert body["error"]["code"] == "directory_not_empty"
    assert (await files.call("DELETE", params={"path": "z", "recursive": "true"}))[0] == 204
    assert not (_home(files) / "z").exists()
    status, body = await files.call("DELETE", params={"path": ".", "recursive": "true"})
    assert status == 409 and isinstance(body, dict) and body["error"]["code"] == "path_conflict"
    assert _home(files).is_dir()
    status, body = await files.call("GET", "stat", params={"path": "nothing"})
    assert status == 404 and isinstance(body, dict)
    assert body["error"]["code"] == "file_not_found"


async def test_a_symlink_out_of_the_roots_is_refused_and_removing_it_keeps_its_target(
    files: Files, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    _home(files).mkdir(parents=True, exist_ok=True)
    (_home(files) / "link").symlink_to(outside)
    status, body = await files.call("GET", "content", params={"path": "link/secret"})
    assert status == 403 and isinstance(body, dict)
    assert body["error"]["code"] == "path_outside_roots"
    status, _ = await files.call("PUT", "content", params={"path": "link/new"}, data=b"x")
    assert status == 403
    status, body = await files.call("GET", "stat", params={"path": "link"})
    assert status == 200 and isinstance(body, dict) and body["type"] == "symlink"
    assert (await files.call("DELETE", params={"path": "link", "recursive": "true"}))[0] == 204
    assert (outside / "secret").read_text() == "secret\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


async def test_ranges_and_head_describe_the_file(files: Files) -> None:
    data = bytes(range(256)) * 40
    await files.call("PUT", "content", params={"path": "r.bin"}, data=data)
    status, got = await files.call(
        "GET", "content", params={"path": "r.bin"}, headers={"Range": "bytes=-100"}
    )
    assert (status, got) == (206, data[-100:])
    async with files.session.head(files.base + "/content", params={"path": "r.bin"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert resp.headers["Accept-Ranges"] == "bytes"
    status, body = await files.call(
        "GET", "content", params={"path": "r.bin"}, headers={"Range": "lines=1-2"}
    )
    assert status == 400 and isinstance(body, dict) and body["error"]["field"] == "Range"


async def test_a_staged_job_at_the_local_center_reads_its_upload_and_its_output_is_collected(
    files: Files,
) -> None:
    spec = {
        "center": "local",
        "script": "tr a-z A-Z < words.txt > shout.txt\n",
        "inputs": [{"upload": True, "destination": "words.txt"}],
        "outputs": [{"source": "shout.txt"}, {"source": "never-written.txt"}],
    }
    async with files.session.post(files.gw.url + "/v1/jobs", json=spec) as resp:
        assert resp.status == 202
        job = await resp.json()
    async with files.gw.client() as client:
        async with files.session.put(
            f"{files.gw.url}/v1/jobs/{job['id']}/inputs/0", data=b"quiet words\n"
        ) as resp:
            assert resp.status == 200, await resp.text()
        done = await client.wait(job["id"], timeout=60)
    assert done["state"] == "FAILED"  # it completed, but one output was not there
    assert done["reason"].startswith("staging: output 1 (never-written.txt):")
    shout = done["staging"]["outputs"][0]
    assert shout["state"] == "done"
    assert shout["sha256"] == hashlib.sha256(b"QUIET WORDS\n").hexdigest()
    assert done["staging"]["outputs"][1]["state"] == "failed"
    assert done["staging"]["final_state"] == "COMPLETED"


@pytest.mark.parametrize(
    ("staging", "status", "field"),
    [
        (
            {"inputs": [{"source": {"center": "nowhere", "path": "x"}, "destination": "x"}]},
            422,
            "inputs[0].source.center",
        ),
        (
            {"inputs": [{"source": {"center": "local", "path": "../x"}, "destination": "x"}]},
            422,
            "inputs[0].source.path",
        ),
        ({"inputs": [{"upload": True, "destination": "/etc/x\n"}]}, 422, "inputs[0].destination"),
        ({"inputs": [{"destination": "x"}]}, 422, "inputs[0]"),
        (
            {"outputs": [{"source": "out", "destination": {"center": "nowhere", "path": "o"}}]},
            422,
            "outputs[0].destination.center",
        ),
        ({"outputs": [{"source": "~root/out"}]}, 422, "outputs[0].source"),
    ],
)
async def test_staging_a_job_cannot_do_is_refused_before_it_is_stored(
    files: Files, staging: dict[str, Any], status: int, field: str
) -> None:
    spec = {"center": "local", "command": "true", **staging}
    async with files.session.post(files.gw.url + "/v1/jobs", json=spec) as resp:
        body = await resp.json()
        assert resp.status == status, body
        assert body["error"]["field"] == field
    async with files.gw.client() as client:
        assert (await client.list())["jobs"] == []
