"""A real `hpcfed serve` as a subprocess on a config of the test's own, against the
testbed's centera: for tests that need a whole process (signals, its memory)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.testbed import Testbed
from tests.testbed.gatewayfiles import vault_config

HPCFED = (sys.executable, "-m", "gateway.cli")
#: How long a SIGTERM'd gateway may take to exit.
STOP_BOUND = 20.0


class ServedGateway:
    """`hpcfed serve` as a subprocess in its own session, on a config of this test's own."""

    def __init__(
        self,
        base: Path,
        testbed: Testbed,
        tag: str,
        *,
        port: int = 0,
        centers: tuple[str, ...] = ("centera",),
        **settings: object,
    ) -> None:
        """`settings` are more fields of gateway.yaml (e.g. `store`), over the defaults."""
        self.base = base
        self.tag = tag
        self.port = port
        self.data = base / "data"
        self.config = base / "gateway.yaml"
        self.log = base / "gateway.log"
        center_dir = testbed.gateway_config.parent / "centers"
        document = {
            "data_dir": str(self.data),
            "listen": {"host": "127.0.0.1", "port": 0},
            "poll_interval": 0.3,
            "submit_timeout": 60,
            "center_files": [str(center_dir / f"{c}.yaml") for c in centers],
            "auth": {"bootstrap_user": None},
            "vault": vault_config(testbed.base).model_dump(),
            # The storm is one user's burst: no 429 may hide what the test is about.
            "limits": {"rate": 10000, "burst": 10000},
            **settings,
        }
        self.config.write_text(yaml.safe_dump(document))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HPCFED_")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @staticmethod
    def issuing(user: str) -> tuple[str, ...]:
        return ("--user", user, "--role", "researcher")

    def token(self, user: str = "alice") -> str:
        result = subprocess.run(
            [*HPCFED, "token", "issue", "--config", str(self.config), *self.issuing(user)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def start(self) -> str:
        url_file = self.data / "gateway-url"
        url_file.unlink(missing_ok=True)  # a SIGKILL'd gateway leaves its own behind
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*HPCFED, "serve", "--config", str(self.config), "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not url_file.exists():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        self.url = url_file.read_text().strip()
        return self.url

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_BOUND)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@contextlib.contextmanager
def served(base: Path, testbed: Testbed, tag: str) -> Iterator[ServedGateway]:
    gateway = ServedGateway(base, testbed, tag)
    try:
        yield gateway
    finally:
        gateway.stop()
        cancel_named(testbed, gateway.tag)


def cancel_named(testbed: Testbed, name: str) -> None:
    """Cancel this test's jobs (all share one name), not those of tests running beside it."""
    argv = testbed.ssh_command("centera", f"scancel -u alice --name {name}", user="alice")
    subprocess.run(argv, capture_output=True, timeout=30)
