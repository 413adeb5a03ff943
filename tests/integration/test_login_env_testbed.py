"""Jobs, files and staging for job users with the login environments real centers give.

carol's `.bashrc` and `.profile` print a banner on stdout and a notice on stderr for
every shell; dave's login shell is tcsh, with a `.cshrc` that prints too
(tests/testbed/loginenv.py). At centera (Slurm) and centerc (the PBS dialect, whose
sftp subsystem is the external sftp-server that sshd starts through the login shell)
every answer must be exactly what the center's commands said, every download exactly
the file's bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from adapters.errors import CenterUnavailable, CommandFailed
from adapters.transport import framing
from adapters.transport.keys import KeyFile
from adapters.transport.openssh import OpenSSH
from adapters.transport.ssh import SSHPool
from gateway.client.core import HpcfedClient
from gateway.config import LoadedConfig
from tests.conftest import Gateway, GatewayFactory
from tests.integration._adapter_helpers import target
from tests.testbed import Testbed
from tests.testbed.loginenv import PRINTS

pytestmark = pytest.mark.integration

MiB = 1 << 20
USERS = ("carol", "dave")
CENTERS = ("centera", "centerc")
CASES = [pytest.param(u, c, id=f"{u}-{c}") for u in USERS for c in CENTERS]


@pytest.fixture
def workdir(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh directory name in each chatty user's home (all centers share the homes)."""
    name = f"loginenv-{uuid.uuid4().hex[:8]}"
    yield name
    for user in USERS:
        shutil.rmtree(Path("/home") / user / name, ignore_errors=True)


async def _client(start_gateway: GatewayFactory, config: LoadedConfig, user: str) -> HpcfedClient:
    gw = await start_gateway(config, USERS)
    return gw.client(user)


async def _hpcfed(gw: Gateway, user: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    """`hpcfed ARGS` as its own process, as `user`."""
    env = {**os.environ, "HPCFED_URL": gw.url, "HPCFED_TOKEN": gw.tokens[user]}
    env["HPCFED_DATA_DIR"] = str(cwd / "no-data-dir")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(("user", "center"), CASES)
async def test_the_login_environment_prints_and_commands_still_get_exact_answers(
    testbed: Testbed, user: str, center: str
) -> None:
    pool = SSHPool()
    try:
        key = KeyFile(str(testbed.user_key(user)))
        conn = pool.connection(target(testbed, center, login=user, credential=key))
        result = await conn.run(
            "trap 'echo trapped' EXIT; echo \"$0 $(id -un)\"; echo to-stderr >&2; exit 7"
        )
        assert (result.exit_status, result.stdout, result.stderr) == (
            7,
            f"/bin/sh {user}\ntrapped\n".encode(),
            b"to-stderr\n",
        )
        # The startup files really do print: the answer above had it set aside.
        assert conn.login_noise is not None and PRINTS[user] in conn.login_noise
        assert await conn.home() == f"/home/{user}"
        if center == "centerc":  # its sftp-server runs through the login shell
            assert conn.sftp_via_shell is not None and PRINTS[user] in conn.sftp_via_shell
    finally:
        await pool.close()


@pytest.mark.parametrize(("user", "center"), CASES)
async def test_jobs_complete_with_their_exit_codes_and_exact_output(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, user: str, center: str
) -> None:
    async with await _client(start_gateway, testbed_config, user) as client:
        results = await client.submit_batch(
            [
                {
                    "name": "chatty-ok",
                    "center": center,
                    "script": 'echo "ran as $(id -un)"\necho job-stderr >&2\n',
                },
                {
                    "name": "chatty-fail",
                    "center": center,
                    "command": "sh",
                    "arguments": ["-c", "exit 3"],
                },
            ]
        )
        assert [r["status"] for r in results] == [201, 201], [r.get("error") for r in results]
        ok, failed = (r["job"] for r in results)
        assert ok["native_id"] and failed["native_id"]
        done = await client.wait(ok["id"], timeout=120)
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0), done
        assert await client.output(ok["id"]) == f"ran as {user}\n".encode()
        assert await client.output(ok["id"], "stderr") == b"job-stderr\n"
        ended = await client.wait(failed["id"], timeout=120)
        assert (ended["state"], ended["exit_code"]) == ("FAILED", 3), ended


@pytest.mark.parametrize(("user", "center"), CASES)
async def test_files_up_and_down_are_byte_exact_on_both_paths(
    start_gateway: GatewayFactory,
    testbed_config: LoadedConfig,
    tmp_path: Path,
    workdir: str,
    user: str,
    center: str,
) -> None:
    gw = await start_gateway(testbed_config, USERS)
    async with gw.client(user) as client:
        await client.mkdir(center, workdir)
        # 1000 bytes over SFTP; 20 MiB over the OpenSSH bulk path (above bulk_threshold).
        for name, size in (("small.bin", 1000), ("big.bin", 20 * MiB)):
            local = tmp_path / name
            local.write_bytes(os.urandom(size))
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            put = await client.upload(center, f"{workdir}/{name}", local, sha256=digest)
            assert (put["size"], put["sha256"]) == (size, digest)
            assert (Path("/home") / user / workdir / name).read_bytes() == local.read_bytes()
            copy = tmp_path / f"copy-{name}"
            got = await client.download(center, f"{workdir}/{name}", copy, verify=True)
            assert (got["size"], got["bytes"], got["sha256"]) == (size, size, digest)
            assert copy.read_bytes() == local.read_bytes()
            checked = await client.checksum(center, f"{workdir}/{name}")
            assert (checked["size"], checked["sha256"]) == (size, digest)
        # The CLI checks the sha256 of what it downloaded against the center's.
        rc, out, err = await _hpcfed(
            gw, user, tmp_path, "get", f"{center}:{workdir}/big.bin", "cli.bin"
        )
        assert rc == 0, err
        assert (tmp_path / "cli.bin").read_bytes() == (tmp_path / "big.bin").read_bytes()
        assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() in out


@pytest.mark.parametrize(("user", "center"), CASES)
async def test_a_job_with_staged_inputs_and_outputs_completes_with_right_checksums(
    start_gateway: GatewayFactory,
    testbed_config: LoadedConfig,
    tmp_path: Path,
    workdir: str,
    user: str,
    center: str,
) -> None:
    async with await _client(start_gateway, testbed_config, user) as client:
        await client.mkdir(center, workdir)
        source = os.urandom(3 * MiB)
        (tmp_path / "in.bin").write_bytes(source)
        await client.upload(center, f"{workdir}/in.bin", tmp_path / "in.bin")
        job = await client.submit(
            {
                "name": "chatty-staged",
                "center": center,
                "script": "cat in.bin params.txt > out.bin\n",
                "inputs": [
                    {
                        "source": {"center": center, "path": f"{workdir}/in.bin"},
                        "destination": "in.bin",
                    },
                    {"upload": True, "destination": "params.txt"},
                ],
                "outputs": [
                    {
                        "source": "out.bin",
                        "destination": {"center": center, "path": f"{workdir}/out.bin"},
                    }
                ],
            }
        )
        params = tmp_path / "params.txt"
        params.write_bytes(b"params\n")
        await client.upload_job_input(job["id"], 1, params)
        done = await client.wait(job["id"], timeout=180)
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0), done
        assert done["staging"]["inputs"][0]["sha256"] == hashlib.sha256(source).hexdigest()
        expected = hashlib.sha256(source + b"params\n").hexdigest()
        output = done["staging"]["outputs"][0]
        assert (output["state"], output["sha256"], output["size"]) == (
            "done",
            expected,
            len(source) + 7,
        )
        assert (await client.checksum(center, f"{workdir}/out.bin"))["sha256"] == expected


@pytest.mark.parametrize("center", CENTERS)
@pytest.mark.parametrize("said", ["Account carol is disabled: contact support", ""])
async def test_a_startup_file_that_ends_the_shell_gives_an_error_naming_it(
    testbed: Testbed, tmp_path: Path, center: str, said: str
) -> None:
    """A login whose .bashrc exits before the command (saying why, or silently):
    commands, SFTP and the bulk path each fail with a clear error naming the startup
    files and quoting what they printed, never a silent empty answer."""
    bashrc = Path("/home/carol/.bashrc")
    original = bashrc.read_bytes()
    pool, bulk = SSHPool(), OpenSSH(tmp_path / "run")
    key = KeyFile(str(testbed.user_key("carol")))
    where = target(testbed, center, login="carol", credential=key)
    quoted = said or "it printed nothing"
    try:
        line = f'echo "{said}"; exit 1\n' if said else "exit 1\n"
        bashrc.write_bytes(line.encode() + original)
        conn = pool.connection(where)
        with pytest.raises(framing.LoginEnvironmentBroken) as caught:
            await conn.run("echo never")
        message = caught.value.message
        assert "carol" in message and "startup files" in message and quoted in message
        with pytest.raises(framing.LoginEnvironmentBroken, match=quoted):
            async for _ in bulk.read(where, "/home/carol/.bashrc", 0, 10):
                pass
        if center == "centerc":  # the sftp-server starts through the login shell there
            with pytest.raises(framing.LoginEnvironmentBroken, match=quoted):
                await conn.home()
        else:
            assert await conn.home() == "/home/carol"
    finally:
        bashrc.write_bytes(original)
        await pool.close()
        await bulk.close()


@pytest.mark.parametrize(("user", "center"), CASES)
async def test_the_bulk_path_gives_exactly_the_bytes_asked_for_or_an_error(
    testbed: Testbed, tmp_path: Path, workdir: str, user: str, center: str
) -> None:
    bulk = OpenSSH(tmp_path / "run")
    key = KeyFile(str(testbed.user_key(user)))
    where = target(testbed, center, login=user, credential=key)
    home = Path("/home") / user
    (home / workdir).mkdir()
    owner = pwd.getpwnam(user)
    os.chown(home / workdir, owner.pw_uid, owner.pw_gid)
    remote = f"{home}/{workdir}/data.bin"
    data = os.urandom(9 * MiB + 3)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), MiB):
            yield data[i : i + MiB]

    try:
        assert await bulk.write(where, remote, 0, chunks()) == len(data)
        assert Path(remote).read_bytes() == data
        got = b"".join([b async for b in bulk.read(where, remote, 5, len(data) - 5)])
        assert got == data[5:]
        # More than the file holds: an error, and never all the bytes the reader expects.
        received = bytearray()
        with pytest.raises(CenterUnavailable, match="nothing of it is to be trusted"):
            async for block in bulk.read(where, remote, 0, len(data) + 10):
                received += block
        assert len(received) < len(data) + 10
        with pytest.raises(CommandFailed, match="No such file"):
            async for _ in bulk.read(where, remote + ".missing", 0, 10):
                pass
    finally:
        await bulk.close()


async def test_a_file_cut_during_a_bulk_download_never_arrives_as_a_whole_answer(
    start_gateway: GatewayFactory, testbed_config: LoadedConfig, workdir: str
) -> None:
    """The file shrinks at the center while the gateway streams it: the client gets
    fewer bytes than announced and an error, not a complete answer of other bytes."""
    gw = await start_gateway(testbed_config, USERS)
    async with gw.client("carol") as client:
        await client.mkdir("centera", workdir)
        local = Path("/home/carol") / workdir / "big.bin"
        local.write_bytes(os.urandom(64 * MiB))
        owner = pwd.getpwnam("carol")
        os.chown(local, owner.pw_uid, owner.pw_gid)
        url = f"{gw.url}/v1/centers/centera/files/content"
        headers = {"Authorization": f"Bearer {gw.tokens['carol']}"}
        received = 0
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(url, params={"path": f"{workdir}/big.bin"}) as resp:
                assert resp.status == 200 and resp.content_length == 64 * MiB
                with pytest.raises(aiohttp.ClientPayloadError):
                    async for block in resp.content.iter_chunked(MiB):
                        if not received:
                            with local.open("r+b") as fh:  # the center's copy shrinks
                                fh.truncate(32 * MiB)
                        received += len(block)
        assert received < 64 * MiB
