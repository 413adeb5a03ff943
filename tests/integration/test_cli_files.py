"""The file commands (`hpcfed ls/put/get/rm/mkdir/checksum/transfer`, and `submit`
with local inputs) as real processes, against a real gateway on the testbed's
centers, as alice (login alice at every center)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.client.core import ClientError
from gateway.config import LoadedConfig
from tests.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


class Cli:
    """Runs `hpcfed` as its own process against one gateway, as one user. The gateway
    serves from this test's event loop, so the process is awaited, never waited on."""

    def __init__(self, gateway: Gateway, home: Path, user: str = "alice") -> None:
        self.env = {
            **os.environ,
            "HPCFED_URL": gateway.url,
            "HPCFED_TOKEN": gateway.tokens[user],
            "HPCFED_DATA_DIR": str(home / "no-data-dir"),
        }

    async def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=cwd,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return subprocess.CompletedProcess(list(args), proc.returncode, out, err)

    async def run_with_tty_stderr(self, *args: str) -> tuple[int, str]:
        """Run with stderr on a pseudo-terminal; the exit status and what it showed."""
        master, slave = os.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.cli",
                *args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=slave,
                env={**self.env, "COLUMNS": "120"},
            )
        finally:
            os.close(slave)

        def read_all() -> bytes:
            chunks = []
            with contextlib.suppress(OSError):  # EIO once the process has closed it
                while chunk := os.read(master, 65536):
                    chunks.append(chunk)
            return b"".join(chunks)

        try:
            async with asyncio.timeout(120):
                shown, returncode = await asyncio.gather(asyncio.to_thread(read_all), proc.wait())
        finally:
            os.close(master)
        return returncode, shown.decode(errors="replace")

    async def ok(self, *args: str, cwd: Path | None = None) -> str:
        """stdout of a command that must succeed."""
        result = await self.run(*args, cwd=cwd)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    async def json(self, *args: str) -> Any:
        return json.loads(await self.ok("--json", *args))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


@pytest.fixture
async def gw(start_gateway: GatewayFactory, testbed_config: LoadedConfig) -> Gateway:
    return await start_gateway(testbed_config)


@pytest.fixture
def cli(gw: Gateway, tmp_path: Path) -> Cli:
    return Cli(gw, tmp_path)


@pytest.fixture
async def workdir(gw: Gateway) -> AsyncIterator[str]:
    """A fresh directory name in alice's home; removed with its contents at centera and
    centerc after the test (the two may share the home or not)."""
    name = f"hpcfed-test-{uuid.uuid4().hex[:10]}"
    yield name
    async with gw.client() as client:
        for center in ("centera", "centerc"):
            with contextlib.suppress(ClientError):
                await client.rm(center, name, recursive=True)


async def test_put_ls_get_round_trip_keeps_every_byte(
    cli: Cli, workdir: str, tmp_path: Path
) -> None:
    local = random_file(tmp_path / "data.bin", 3 * MiB + 17)
    await cli.ok("mkdir", f"centera:{workdir}")

    put = await cli.json("put", str(local), f"centera:{workdir}/data.bin")
    assert (put["path"].endswith(f"{workdir}/data.bin"), put["size"]) == (True, 3 * MiB + 17)
    assert put["sha256"] == sha256(local)

    listing = await cli.json("ls", f"centera:{workdir}")
    assert [(e["name"], e["type"], e["size"]) for e in listing["entries"]] == [
        ("data.bin", "file", 3 * MiB + 17)
    ]
    assert "data.bin" in await cli.ok("ls", f"centera:{workdir}")

    (tmp_path / "back").mkdir()
    got = await cli.json("get", f"centera:{workdir}/data.bin", str(tmp_path / "back"))
    assert (got["size"], got["offset"], got["bytes"]) == (3 * MiB + 17, 0, 3 * MiB + 17)
    assert got["sha256"] == sha256(local)  # checked against the center's
    assert sha256(tmp_path / "back" / "data.bin") == sha256(local)

    remote = await cli.json("checksum", f"centera:{workdir}/data.bin")
    assert remote["sha256"] == sha256(local)


async def test_progress_bars_are_drawn_on_a_terminal_only(
    cli: Cli, workdir: str, tmp_path: Path
) -> None:
    local = random_file(tmp_path / "data.bin", 2 * MiB)
    await cli.ok("mkdir", f"centera:{workdir}")

    piped = await cli.run("put", str(local), f"centera:{workdir}/piped.bin")
    assert piped.returncode == 0 and piped.stderr == b""
    assert f"{workdir}/piped.bin  {2 * MiB} bytes  sha256 {sha256(local)}" in piped.stdout.decode()

    returncode, terminal = await cli.run_with_tty_stderr(
        "put", str(local), f"centera:{workdir}/tty.bin"
    )
    assert returncode == 0
    assert "put data.bin" in terminal and "2.0/2.0 MiB" in terminal


async def test_get_without_local_writes_the_remote_name_and_dash_writes_stdout(
    cli: Cli, workdir: str, tmp_path: Path
) -> None:
    local = random_file(tmp_path / "small.bin", 64 * 1024 + 3)
    await cli.ok("mkdir", f"centera:{workdir}")
    await cli.ok("put", str(local), f"centera:{workdir}/")  # a directory: keeps the name

    (tmp_path / "cwd").mkdir()
    await cli.ok("get", f"centera:{workdir}/small.bin", cwd=tmp_path / "cwd")
    assert (tmp_path / "cwd" / "small.bin").read_bytes() == local.read_bytes()

    result = await cli.run("get", f"centera:{workdir}/small.bin", "-")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == local.read_bytes()


async def test_get_resume_after_a_truncated_local_file_fetches_only_the_rest(
    cli: Cli, workdir: str, tmp_path: Path
) -> None:
    local = random_file(tmp_path / "data.bin", 4 * MiB + 5)
    await cli.ok("mkdir", f"centera:{workdir}")
    await cli.ok("put", str(local), f"centera:{workdir}/data.bin")
    copy = tmp_path / "copy.bin"
    await cli.ok("get", f"centera:{workdir}/data.bin", str(copy))
    kept = MiB + 123
    with copy.open("r+b") as f:
        f.truncate(kept)

    got = await cli.json("get", f"centera:{workdir}/data.bin", str(copy), "--resume")
    assert (got["offset"], got["bytes"]) == (kept, 4 * MiB + 5 - kept)
    assert copy.read_bytes() == local.read_bytes()

    again = await cli.json("get", f"centera:{workdir}/data.bin", str(copy), "--resume")
    assert (again["offset"], again["bytes"]) == (4 * MiB + 5, 0)  # complete: nothing to fetch
    assert copy.read_bytes() == local.read_bytes()


async def test_put_resume_continues_a_partial_remote_file_from_its_size(
    cli: Cli, gw: Gateway, workdir: str, tmp_path: Path
) -> None:
    local = random_file(tmp_path / "data.bin", 3 * MiB + 11)
    part = tmp_path / "part.bin"
    part.write_bytes(local.read_bytes()[: 2 * MiB + 1])
    async with gw.client() as client:
        await client.mkdir("centera", workdir)
        await client.upload("centera", f"{workdir}/data.bin", part)  # an interrupted put

    put = await cli.json("put", str(local), f"centera:{workdir}/data.bin", "--resume")
    assert (put["offset"], put["size"]) == (2 * MiB + 1, 3 * MiB + 11)
    remote = await cli.json("checksum", f"centera:{workdir}/data.bin")
    assert remote["sha256"] == sha256(local)


async def test_put_no_overwrite_refuses_to_replace_an_existing_file(
    cli: Cli, workdir: str, tmp_path: Path
) -> None:
    first = random_file(tmp_path / "first.bin", 1000)
    second = random_file(tmp_path / "second.bin", 2000)
    await cli.ok("mkdir", f"centera:{workdir}")
    await cli.ok("put", str(first), f"centera:{workdir}/x.bin", "--no-overwrite")

    refused = await cli.run("put", str(second), f"centera:{workdir}/x.bin", "--no-overwrite")
    assert refused.returncode == 1
    assert "already exists" in refused.stderr.decode()
    remote = await cli.json("checksum", f"centera:{workdir}/x.bin")
    assert (remote["size"], remote["sha256"]) == (1000, sha256(first))

    await cli.ok("put", str(second), f"centera:{workdir}/x.bin")  # overwrite is the default
    assert (await cli.json("checksum", f"centera:{workdir}/x.bin"))["sha256"] == sha256(second)


async def test_mkdir_parents_and_rm_recursive(cli: Cli, workdir: str, tmp_path: Path) -> None:
    no_parent = await cli.run("mkdir", f"centera:{workdir}/a/b/c")
    assert no_parent.returncode == 1

    await cli.ok("mkdir", f"centera:{workdir}/a/b/c", "-p")
    await cli.ok("mkdir", f"centera:{workdir}/a/b/c", "-p")  # already there: fine with -p
    exists = await cli.run("mkdir", f"centera:{workdir}/a/b/c")
    assert exists.returncode == 1 and "file_exists" in exists.stderr.decode()
    listing = await cli.json("ls", f"centera:{workdir}/a/b")
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [("c", "dir")]

    await cli.ok("put", str(random_file(tmp_path / "f.bin", 10)), f"centera:{workdir}/a/b/c/f")
    not_empty = await cli.run("rm", f"centera:{workdir}/a")
    assert not_empty.returncode == 1 and "directory_not_empty" in not_empty.stderr.decode()

    await cli.ok("rm", f"centera:{workdir}/a/b/c/f")
    assert (await cli.json("ls", f"centera:{workdir}/a/b/c"))["entries"] == []
    await cli.ok("rm", f"centera:{workdir}/a", "-r")
    gone = await cli.run("ls", f"centera:{workdir}/a")
    assert gone.returncode == 1 and "file_not_found" in gone.stderr.decode()
    assert (await cli.json("ls", f"centera:{workdir}"))["entries"] == []


async def test_paths_outside_the_roots_are_refused_with_the_servers_reason(cli: Cli) -> None:
    result = await cli.run("ls", "centera:/etc")
    assert result.returncode == 1
    assert "path_outside_roots" in result.stderr.decode()
    result = await cli.run("get", "centera:../bob/secret", "-")
    assert result.returncode == 1 and result.stdout == b""
    assert "path_refused" in result.stderr.decode()


async def test_transfer_wait_copies_to_another_center_with_equal_sha256(
    cli: Cli, workdir: str, tmp_path: Path
) -> None:
    local = random_file(tmp_path / "data.bin", 2 * MiB + 99)
    await cli.ok("mkdir", f"centera:{workdir}")
    await cli.ok("mkdir", f"centerc:{workdir}", "-p")
    await cli.ok("put", str(local), f"centera:{workdir}/data.bin")

    result = await cli.run(
        "--json",
        "transfer",
        f"centera:{workdir}/data.bin",
        f"centerc:{workdir}/copy.bin",
        "--wait",
        "--interval",
        "0.2",
    )
    assert result.returncode == 0, result.stderr.decode()
    transfer = json.loads(result.stdout)
    assert transfer["state"] == "COMPLETED"
    assert (transfer["bytes_done"], transfer["bytes_total"]) == (2 * MiB + 99, 2 * MiB + 99)

    copied = await cli.json("checksum", f"centerc:{workdir}/copy.bin")
    assert (copied["size"], copied["sha256"]) == (2 * MiB + 99, sha256(local))


async def test_transfer_wait_copies_a_directory_tree(
    cli: Cli, workdir: str, tmp_path: Path
) -> None:
    files = {
        "tree/a.bin": random_file(tmp_path / "a.bin", MiB + 1),
        "tree/sub/b.bin": random_file(tmp_path / "b.bin", 777),
    }
    await cli.ok("mkdir", f"centera:{workdir}/tree/sub", "-p")
    await cli.ok("mkdir", f"centerc:{workdir}", "-p")
    for name, local in files.items():
        await cli.ok("put", str(local), f"centera:{workdir}/{name}")

    transfer = await cli.json(
        "transfer", f"centera:{workdir}/tree", f"centerc:{workdir}/copy", "--wait"
    )
    assert (transfer["state"], transfer["files_done"], transfer["files_total"]) == (
        "COMPLETED",
        2,
        2,
    )
    for name, local in files.items():
        copied = await cli.json("checksum", f"centerc:{workdir}/copy/{name.removeprefix('tree/')}")
        assert copied["sha256"] == sha256(local)


async def test_transfer_wait_exits_1_when_it_fails_and_0_when_it_completes(
    cli: Cli, workdir: str, tmp_path: Path
) -> None:
    local = random_file(tmp_path / "data.bin", 1000)
    await cli.ok("mkdir", f"centera:{workdir}")
    await cli.ok("mkdir", f"centerc:{workdir}", "-p")  # the homes may be one directory
    await cli.ok("put", str(local), f"centera:{workdir}/data.bin")
    other = random_file(tmp_path / "other.bin", 10)
    await cli.ok("put", str(other), f"centerc:{workdir}/there.bin")
    src, dst = f"centera:{workdir}/data.bin", f"centerc:{workdir}/there.bin"

    refused = await cli.run("transfer", src, dst, "--wait")
    assert refused.returncode == 1
    assert "FAILED" in refused.stdout.decode()
    assert "already exists" in refused.stderr.decode()

    replaced = await cli.run("transfer", src, dst, "--wait", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr.decode()
    assert "COMPLETED" in replaced.stdout.decode()
    assert (await cli.json("checksum", dst))["sha256"] == sha256(local)

    started = await cli.run("transfer", src, dst, "--overwrite")  # without --wait: its id
    transfer_id = started.stdout.decode().strip()
    assert started.returncode == 0 and transfer_id


async def test_a_missing_source_is_refused_before_a_transfer_starts(cli: Cli, workdir: str) -> None:
    result = await cli.run(
        "transfer", f"centera:{workdir}/missing.bin", f"centerc:{workdir}/x.bin", "--wait"
    )
    assert result.returncode == 1
    assert "file_not_found" in result.stderr.decode()


async def test_submit_uploads_local_inputs_then_the_job_reads_them(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "in.txt").write_text("hello from a local file\n")
    spec = tmp_path / "spec" / "job.yaml"
    spec.write_text(
        "name: staged\n"
        "center: centera\n"
        "script: cat in.txt\n"
        "inputs:\n"
        "  - {local: ./in.txt, destination: in.txt}\n"
    )
    # run from elsewhere: the local path is relative to the spec file
    result = await cli.run(
        "--json", "submit", str(spec), "--wait", "--timeout", "120", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr.decode()
    job = json.loads(result.stdout)
    assert job["state"] == "COMPLETED"
    assert await cli.ok("logs", job["id"]) == "hello from a local file\n"


async def test_put_and_get_resume_past_the_bulk_threshold_keep_every_byte(
    cli: Cli, gw: Gateway, workdir: str, tmp_path: Path
) -> None:
    """Copies of bulk_threshold (8 MiB) or more take the gateway's OpenSSH path; a
    resumed one starts there at an offset."""
    size = 10 * MiB + 3
    local = random_file(tmp_path / "big.bin", size)
    part = tmp_path / "part.bin"
    part.write_bytes(local.read_bytes()[:MiB])
    async with gw.client() as client:
        await client.mkdir("centera", workdir)
        await client.upload("centera", f"{workdir}/big.bin", part)

    put = await cli.json("put", str(local), f"centera:{workdir}/big.bin", "--resume")
    assert (put["offset"], put["size"], put["sha256"]) == (MiB, size, sha256(local))

    copy = tmp_path / "copy.bin"
    copy.write_bytes(local.read_bytes()[: MiB - 1])
    got = await cli.json("get", f"centera:{workdir}/big.bin", str(copy), "--resume")
    assert (got["offset"], got["bytes"]) == (MiB - 1, size - MiB + 1)
    assert copy.read_bytes() == local.read_bytes()
