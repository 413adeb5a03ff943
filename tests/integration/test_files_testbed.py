"""Files, staging and transfers through the real gateway at the testbed's real centers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.config import LoadedConfig
from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.integration

HOME = Path("/home/alice")  # the testbed's job user; all centers share this machine's homes
MiB = 1 << 20


class Api:
    def __init__(self, gw: Gateway, session: aiohttp.ClientSession) -> None:
        self.gw, self.session = gw, session

    def files(self, center: str, op: str = "") -> str:
        return f"{self.gw.url}/v1/centers/{center}/files" + (f"/{op}" if op else "")

    async def put(self, center: str, path: str, data: bytes, **headers: str) -> dict[str, Any]:
        async with self.session.put(
            self.files(center, "content"), params={"path": path}, data=data, headers=headers
        ) as resp:
            assert resp.status in (200, 201), await resp.text()
            return await resp.json()

    async def checksum(self, center: str, path: str) -> str:
        async with self.session.get(self.files(center, "checksum"), params={"path": path}) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["sha256"]

    async def wait(self, url: str, timeout: float = 120) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                async with self.session.get(url) as resp:
                    body = await resp.json()
                if body["terminal"]:
                    return body
                await asyncio.sleep(0.2)


@pytest.fixture
async def api(testbed_config: LoadedConfig, start_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await start_gateway(testbed_config)
    headers = {"Authorization": f"Bearer {gw.tokens['alice']}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Api(gw, session)


@pytest.fixture
def workdir() -> Iterator[str]:
    """A fresh directory in alice's home, by its path relative to the home root."""
    name = f"files-test-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(HOME / name, ignore_errors=True)
    for extra in HOME.glob(f"{name}*"):
        shutil.rmtree(extra, ignore_errors=True)


async def _mkdir(api: Api, center: str, path: str) -> None:
    async with api.session.post(
        api.files(center, "mkdir"), json={"path": path, "parents": True}
    ) as resp:
        assert resp.status in (200, 201), await resp.text()


async def _stream_from_disk(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(MiB):
            yield block


async def test_100_mib_random_file_round_trip_keeps_its_sha256(
    api: Api, workdir: str, tmp_path: Path
) -> None:
    await _mkdir(api, "centera", workdir)
    local = tmp_path / "random.bin"
    expected = hashlib.sha256()
    with local.open("wb") as fh:
        for _ in range(100):
            block = os.urandom(MiB)
            expected.update(block)
            fh.write(block)
    remote = f"{workdir}/random.bin"
    async with api.session.put(
        api.files("centera", "content"),
        params={"path": remote},
        data=_stream_from_disk(local),
        headers={"Content-Length": str(100 * MiB), "X-Checksum-Sha256": expected.hexdigest()},
    ) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["sha256"] == expected.hexdigest()
    got = hashlib.sha256()
    async with api.session.get(api.files("centera", "content"), params={"path": remote}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(100 * MiB)
        async for block in resp.content.iter_chunked(MiB):
            got.update(block)
    assert got.hexdigest() == expected.hexdigest()
    assert await api.checksum("centera", remote) == expected.hexdigest()


async def test_interrupted_download_resumes_with_range_and_ends_byte_identical(
    api: Api, workdir: str
) -> None:
    await _mkdir(api, "centera", workdir)
    data = os.urandom(40 * MiB)  # above the bulk threshold: the OpenSSH path
    await api.put("centera", f"{workdir}/big.bin", data)
    received = bytearray()
    url = api.files("centera", "content")
    async with api.session.get(url, params={"path": f"{workdir}/big.bin"}) as resp:
        async for block in resp.content.iter_chunked(MiB):
            received += block
            if len(received) >= 10 * MiB:
                break  # the client goes away mid-download
        resp.close()
    assert 10 * MiB <= len(received) < len(data)
    async with api.session.get(
        url, params={"path": f"{workdir}/big.bin"}, headers={"Range": f"bytes={len(received)}-"}
    ) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes {len(received)}-{len(data) - 1}/{len(data)}"
        received += await resp.read()
    assert bytes(received) == data
    async with api.session.get(
        url, params={"path": f"{workdir}/big.bin"}, headers={"Range": f"bytes={len(data)}-"}
    ) as resp:
        assert resp.status == 416


async def test_upload_resumed_by_offset_and_a_wrong_checksum_is_refused_but_kept(
    api: Api, workdir: str
) -> None:
    await _mkdir(api, "centerc", workdir)
    data = os.urandom(3 * MiB + 17)
    path = f"{workdir}/resumed.bin"
    await api.put("centerc", path, data[: MiB + 5])
    async with api.session.put(
        api.files("centerc", "content"), params={"path": path, "offset": str(2 * MiB)}, data=b"x"
    ) as resp:
        assert resp.status == 409
        body = (await resp.json())["error"]
        assert (body["code"], body["field"], body["size"]) == ("offset_mismatch", "offset", MiB + 5)
    async with api.session.put(
        api.files("centerc", "content"),
        params={"path": path, "offset": str(MiB + 5)},
        data=data[MiB + 5 :],
        headers={"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()},
    ) as resp:
        assert resp.status == 200, await resp.text()
    assert (HOME / path).read_bytes() == data
    async with api.session.put(
        api.files("centerc", "content"),
        params={"path": f"{workdir}/bad.bin"},
        data=b"some bytes",
        headers={"X-Checksum-Sha256": "0" * 64},
    ) as resp:
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "checksum_mismatch"
    assert (HOME / workdir / "bad.bin").read_bytes() == b"some bytes"


async def test_staged_job_output_transferred_to_centerc_arrives_with_the_same_checksum(
    api: Api, workdir: str
) -> None:
    await _mkdir(api, "centerc", f"{workdir}-c")
    source = os.urandom(5 * MiB)
    await api.put("centerc", f"{workdir}-c/in.bin", source)
    spec = {
        "name": "staged",
        "center": "centera",
        "script": "cat in.bin params.txt in.bin > out.bin\n",
        "inputs": [
            {
                "source": {"center": "centerc", "path": f"{workdir}-c/in.bin"},
                "destination": "in.bin",
            },
            {"upload": True, "destination": "params.txt"},
        ],
        "outputs": [{"source": "out.bin"}],
    }
    async with api.session.post(api.gw.url + "/v1/jobs", json=spec) as resp:
        assert resp.status == 202, await resp.text()
        job = await resp.json()
    assert job["state"] == "SUBMITTING"
    params = b"params\n"
    async with api.session.put(f"{api.gw.url}/v1/jobs/{job['id']}/inputs/1", data=params) as resp:
        assert resp.status == 200, await resp.text()
    job = await api.wait(f"{api.gw.url}/v1/jobs/{job['id']}")
    assert job["state"] == "COMPLETED", job
    staged_in = job["staging"]["inputs"]
    assert staged_in[0]["sha256"] == hashlib.sha256(source).hexdigest()
    output = job["staging"]["outputs"][0]
    expected = hashlib.sha256(source + params + source).hexdigest()
    assert (output["state"], output["sha256"], output["size"]) == (
        "done",
        expected,
        2 * len(source) + len(params),
    )
    body = {
        "source": {"center": "centera", "path": output["path"]},
        "destination": {"center": "centerc", "path": f"{workdir}-c/out.bin"},
    }
    async with api.session.post(api.gw.url + "/v1/transfers", json=body) as resp:
        assert resp.status == 202, await resp.text()
        transfer = await resp.json()
    transfer = await api.wait(f"{api.gw.url}/v1/transfers/{transfer['id']}")
    assert transfer["state"] == "COMPLETED", transfer
    assert transfer["files"][0]["sha256"] == expected
    assert transfer["bytes_done"] == transfer["bytes_total"] == output["size"]
    assert await api.checksum("centerc", f"{workdir}-c/out.bin") == expected


async def test_job_whose_input_cannot_be_staged_fails_with_the_reason(
    api: Api, workdir: str
) -> None:
    spec = {
        "center": "centera",
        "command": "true",
        "inputs": [
            {
                "source": {"center": "centerc", "path": f"{workdir}/missing.bin"},
                "destination": "in.bin",
            }
        ],
    }
    async with api.session.post(api.gw.url + "/v1/jobs", json=spec) as resp:
        assert resp.status == 202
        job = await resp.json()
    job = await api.wait(f"{api.gw.url}/v1/jobs/{job['id']}")
    assert job["state"] == "FAILED"
    assert job["native_id"] is None  # never submitted
    assert job["reason"].startswith("staging: input 0 (in.bin):")
    assert "no such file" in job["reason"]


async def test_directory_transfer_copies_every_file_with_its_checksum(
    api: Api, workdir: str
) -> None:
    await _mkdir(api, "centera", f"{workdir}/tree/sub")
    blobs = {
        "tree/a.bin": os.urandom(MiB),
        "tree/sub/b.bin": os.urandom(9 * MiB),
        "tree/empty": b"",
    }
    for rel, data in blobs.items():
        await api.put("centera", f"{workdir}/{rel}", data)
    body = {
        "source": {"center": "centera", "path": f"{workdir}/tree"},
        "destination": {"center": "centerc", "path": f"{workdir}/copy"},
    }
    async with api.session.post(api.gw.url + "/v1/transfers", json=body) as resp:
        transfer = await resp.json()
    transfer = await api.wait(f"{api.gw.url}/v1/transfers/{transfer['id']}")
    assert transfer["state"] == "COMPLETED", transfer
    assert transfer["files_done"] == transfer["files_total"] == 3
    for rel, data in blobs.items():
        copied = HOME / workdir / rel.replace("tree", "copy", 1)
        assert copied.read_bytes() == data
    async with api.session.post(api.gw.url + "/v1/transfers", json=body) as resp:
        again = await resp.json()
    again = await api.wait(f"{api.gw.url}/v1/transfers/{again['id']}")
    assert again["state"] == "FAILED"
    assert "already exists" in again["error"]


# ------------------------------------------------------------ traversal


@pytest.fixture
def outside(workdir: str) -> Iterator[Path]:
    """A directory outside every root that alice could write to, and links to it."""
    target = Path(f"/tmp/hpcfed-outside-{uuid.uuid4().hex[:8]}")
    target.mkdir(mode=0o777)
    target.chmod(0o777)
    sentinel = target / "sentinel"
    sentinel.write_text("untouched\n")
    sentinel.chmod(0o666)
    home_dir = HOME / workdir
    home_dir.mkdir()
    (home_dir / "escape").symlink_to(target)
    (home_dir / "escape-file").symlink_to(sentinel)
    (home_dir / "ok.txt").write_text("inside\n")
    for path in (home_dir, home_dir / "ok.txt"):
        os.lchown(path, *_alice_ids())
    yield target
    shutil.rmtree(target, ignore_errors=True)


def _alice_ids() -> tuple[int, int]:
    st = HOME.stat()
    return st.st_uid, st.st_gid


def _traversal_corpus(w: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, route, request kwargs): every one must be refused with a 4xx."""
    get = [
        "../bob/.bashrc",
        "..",
        f"{w}/../../bob",
        "/etc/passwd",
        "/home/bob/.bashrc",
        "/home/alice/../bob/.bashrc",
        "/home/alice2/x",
        "//etc/passwd",
        "~bob/.bashrc",
        "~/../bob",
        "/",
        f"{w}/escape/sentinel",
        f"{w}/escape-file",
        f"{w}/ok.txt\0.png",
        f"{w}/" + "x" * 300,
        "a/" * 2100 + "b",
        "..\\..\\etc\\passwd",
        f"{w}/line\nbreak",
        f"{w}/./../../../etc/shadow",
        f"{w}/escape/../escape/sentinel",
    ]
    corpus: list[tuple[str, str, dict[str, Any]]] = []
    for path in get:
        corpus.append(("GET", "content", {"params": {"path": path}}))
    for path in get[:6]:
        corpus.append(("GET", "stat", {"params": {"path": path}}))
    corpus += [
        ("GET", "", {"params": {"path": f"{w}/escape"}}),
        ("GET", "checksum", {"params": {"path": f"{w}/escape-file"}}),
        ("PUT", "content", {"params": {"path": f"{w}/escape/new"}, "data": b"x"}),
        ("PUT", "content", {"params": {"path": f"{w}/escape-file"}, "data": b"x"}),
        ("PUT", "content", {"params": {"path": "/tmp/evil"}, "data": b"x"}),
        ("PUT", "content", {"params": {"path": f"{w}/../evil"}, "data": b"x"}),
        ("POST", "mkdir", {"json": {"path": f"{w}/escape/newdir"}}),
        ("POST", "mkdir", {"json": {"path": "/tmp/newdir", "parents": True}}),
        ("POST", "rename", {"json": {"path": f"{w}/ok.txt", "to": f"{w}/escape/ok.txt"}}),
        ("POST", "rename", {"json": {"path": f"{w}/ok.txt", "to": "/tmp/ok.txt"}}),
        ("POST", "rename", {"json": {"path": f"{w}/escape/sentinel", "to": f"{w}/stolen"}}),
        ("DELETE", "", {"params": {"path": f"{w}/escape/sentinel"}}),
        ("DELETE", "", {"params": {"path": "/home/alice", "recursive": "true"}}),
        ("DELETE", "", {"params": {"path": "..", "recursive": "true"}}),
    ]
    return corpus


async def test_traversal_attempts_get_4xx_and_touch_nothing_outside_the_roots(
    api: Api, workdir: str, outside: Path
) -> None:
    bob_before = sorted(p.name for p in Path("/home/bob").iterdir())
    corpus = _traversal_corpus(workdir)
    assert len(corpus) >= 20
    # Encoded once in the URL itself: the server decodes it to '../../etc/passwd'.
    encoded = URL(api.files("centera", "content") + "?path=..%2F..%2Fetc%2Fpasswd", encoded=True)
    async with api.session.get(encoded) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "path_refused"
    for method, op, kwargs in corpus:
        async with api.session.request(method, api.files("centera", op), **kwargs) as resp:
            body = await resp.json()
            assert 400 <= resp.status < 500, (method, op, kwargs, resp.status, body)
            assert body["error"]["field"] in ("path", "to"), body
    transfer = {
        "source": {"center": "centera", "path": f"{workdir}/escape"},
        "destination": {"center": "centerc", "path": f"{workdir}/stolen"},
    }
    async with api.session.post(api.gw.url + "/v1/transfers", json=transfer) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["field"] == "source.path"
    spec = {
        "command": "true",
        "center": "centera",
        "inputs": [{"upload": True, "destination": "../../bob/x"}],
    }
    async with api.session.post(api.gw.url + "/v1/jobs", json=spec) as resp:
        assert resp.status == 422
        assert (await resp.json())["error"]["field"] == "inputs[0].destination"
    assert sorted(p.name for p in outside.iterdir()) == ["sentinel"]
    assert (outside / "sentinel").read_text() == "untouched\n"
    assert sorted(p.name for p in Path("/home/bob").iterdir()) == bob_before
    assert not Path("/tmp/evil").exists() and not Path("/tmp/newdir").exists()
    assert (HOME / workdir / "ok.txt").read_text() == "inside\n"
    assert (HOME / workdir / "escape").is_symlink()


async def test_transfer_under_way_when_the_gateway_stops_is_finished_by_the_next_one(
    testbed_config: LoadedConfig, start_gateway: GatewayFactory, workdir: str
) -> None:
    first = await start_gateway(testbed_config)
    headers = {"Authorization": f"Bearer {first.tokens['alice']}"}
    data = os.urandom(200 * MiB)
    async with aiohttp.ClientSession(headers=headers) as session:
        api = Api(first, session)
        await _mkdir(api, "centera", workdir)
        await api.put("centera", f"{workdir}/big.bin", data)
        body = {
            "source": {"center": "centera", "path": f"{workdir}/big.bin"},
            "destination": {"center": "centerc", "path": f"{workdir}/big-copy.bin"},
        }
        async with session.post(first.url + "/v1/transfers", json=body) as resp:
            transfer = await resp.json()
            assert resp.status == 202, transfer
        async with asyncio.timeout(60):
            while transfer["bytes_done"] == 0:
                await asyncio.sleep(0.05)
                async with session.get(f"{first.url}/v1/transfers/{transfer['id']}") as resp:
                    transfer = await resp.json()
                    assert resp.status == 200, transfer
    assert not transfer["terminal"]
    await first.stop()  # mid-copy
    second = await start_gateway(testbed_config)
    headers = {"Authorization": f"Bearer {second.tokens['alice']}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        api = Api(second, session)
        done = await api.wait(f"{second.url}/v1/transfers/{transfer['id']}")
        assert done["state"] == "COMPLETED", done
        assert done["attempts"] == 2
        expected = hashlib.sha256(data).hexdigest()
        assert done["files"][0]["sha256"] == expected
        assert await api.checksum("centerc", f"{workdir}/big-copy.bin") == expected
    assert sorted(p.name for p in (HOME / workdir).iterdir()) == ["big-copy.bin", "big.bin"]
