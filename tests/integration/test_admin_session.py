"""A scripted session as an admin and a researcher would run it, with real `hpcfed`
processes against a real gateway and the testbed's Slurm center: the audit log
tells it in order, and no token or private key is left in the database, the
gateway's log or the audit log."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gateway.client.core import HpcfedClient
from gateway.config_models import VaultConfig
from gateway.identity.audit import read_audit
from gateway.identity.vault import SIGNING_PREFIX, Vault
from tests.testbed import Testbed


def secret_lines(pem: bytes) -> list[str]:
    """The lines of a PEM/OpenSSH private key that carry key material."""
    return [x for x in pem.decode().splitlines() if x and "PRIVATE KEY" not in x]


class Session:
    def __init__(self, base: Path, testbed: Testbed) -> None:
        self.base = base
        self.config = base / "gateway.yaml"
        self.data = base / "data"
        self.log = base / "gateway.log"
        centera = yaml.safe_load(
            (testbed.gateway_config.parent / "centers/centera.yaml").read_text()
        )
        centera["users"] = {"ada": {"login": "alice"}}
        (base / "centers").mkdir()
        (base / "centers" / "centera.yaml").write_text(yaml.safe_dump(centera))
        gateway = {
            "data_dir": str(self.data),
            "listen": {"host": "127.0.0.1", "port": 0},
            "poll_interval": 0.3,
            "center_files": ["centers/*.yaml"],
            "auth": {"bootstrap_user": None},
        }
        self.config.write_text(yaml.safe_dump(gateway))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HPCFED_")}
        self.env["HPCFED_CONFIG"] = str(self.config)

    def hpcfed(self, *args: str, token: str | None = None) -> str:
        env = dict(self.env)
        if token is not None:
            env["HPCFED_TOKEN"] = token
            env["HPCFED_URL"] = (self.data / "gateway-url").read_text().strip()
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    @contextlib.contextmanager
    def serve(self) -> Iterator[subprocess.Popen[bytes]]:
        with self.log.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--log-level", "debug"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + 30
            while not (self.data / "gateway-url").exists():
                assert proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.05)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.fixture
def session(testbed: Testbed, tmp_path: Path) -> Session:
    return Session(tmp_path, testbed)


async def test_scripted_session_is_audited_in_order_and_leaks_no_secret(
    session: Session, testbed: Testbed, tmp_path: Path
) -> None:
    alice_key = testbed.user_key("alice")
    session.hpcfed(
        "vault", "add-key", "--center", "centera", "--login", "alice",
        "--key-file", str(alice_key),
    )  # fmt: skip
    ada = session.hpcfed("token", "issue", "--user", "ada", "--role", "researcher").strip()
    root = session.hpcfed("token", "issue", "--user", "root", "--role", "admin", "--ttl", "1h")
    root = root.strip()
    whoami = tmp_path / "whoami.yaml"
    whoami.write_text("command: sh\narguments: ['-c', 'id -un']\ncenter: centera\n")
    sleeper = tmp_path / "sleep.yaml"
    sleeper.write_text("command: sleep\narguments: ['300']\ncenter: centera\n")

    with session.serve():
        done = session.hpcfed("submit", str(whoami), "--wait", "--timeout", "90", token=ada)
        job_id, state = done.split()[:2]
        assert state == "COMPLETED"
        assert session.hpcfed("logs", job_id, token=ada) == "alice\n"
        slow = session.hpcfed("submit", str(sleeper), token=ada).strip()
        session.hpcfed("cancel", slow, token=ada)
        url = (session.data / "gateway-url").read_text().strip()
        async with HpcfedClient(url, root) as admin:
            api_token = (await admin.issue_token("bea", ["operator"], ttl="10m"))["token"]
        session.hpcfed("token", "rotate-key")

    local = f"local:{getpass.getuser()}"
    entries = read_audit(session.data / "audit.log")
    assert [(e["action"], e["actor"], e["outcome"]) for e in entries] == [
        ("vault.add_key", local, "ok"),
        ("tokens.issue", local, "ok"),
        ("tokens.issue", local, "ok"),
        ("jobs.submit", "ada", "ok"),
        ("jobs.submit", "ada", "ok"),
        ("jobs.cancel", "ada", "ok"),
        ("tokens.issue", "root", "ok"),
        ("tokens.rotate_key", local, "ok"),
    ]
    assert entries[3]["target"]["job"] == job_id
    assert entries[5]["target"] == {"id": slow}
    assert entries[6]["target"]["user"] == "bea"
    times = [e["time"] for e in entries]
    assert times == sorted(times)

    # Nothing secret at rest outside the vault, nor in what the gateway printed.
    vault = Vault.open(VaultConfig(), lambda v: session.data / v)
    signing = [vault.get(n) for n in vault.names(SIGNING_PREFIX)]
    assert len(signing) == 2  # rotated: the old key still verifies
    secrets = [ada, root, api_token, *secret_lines(alice_key.read_bytes())]
    secrets += [line for pem in signing for line in secret_lines(pem)]
    files = [session.log, session.data / "audit.log"]
    files += sorted(session.data.glob("hpcfed.db*"))
    assert session.data / "hpcfed.db" in files
    for path in files:
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data, path
        leaked = [s[:12] for s in secrets if s.encode() in data]
        assert not leaked, f"{path} holds secret material starting {leaked}"
    raw_vault = (session.data / "vault.json").read_bytes()
    assert not any(s.encode() in raw_vault for s in secret_lines(alice_key.read_bytes()))
    assert json.loads(raw_vault)["format"] == "hpcfed-vault"
    assert "DEBUG" in session.log.read_text()  # the log was as verbose as it gets
