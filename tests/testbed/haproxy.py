"""A real HAProxy (Debian package `haproxy`) in front of gateway replicas, for tests.

The config is the documented example, configs/deploy/haproxy.cfg, with only what must
differ on a test machine replaced: the frontend's port, the server lines (one per
replica, keeping the example's per-server options), the log target (a file) and the
stats socket path. HAProxy runs in the foreground (`-db`) as a child of the test process;
`stop` ends it. The servers' states come from the stats socket (`show stat`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.testbed.procs import TestbedError, TestbedUnavailable, log_tail, wait_until

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "deploy" / "haproxy.cfg"
BACKEND = "hpcfed"
HAPROXY = "/usr/sbin/haproxy"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_SERVER_LINE = re.compile(r"^(\s*)server\s+\S+\s+\S+(.*)$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def render_config(
    example: str, port: int, servers: dict[str, int], stats_socket: Path, log: str
) -> str:
    """The example config with this machine's frontend port, servers (name -> port on
    127.0.0.1), stats socket and log target."""
    lines = example.splitlines()
    out: list[str] = []
    server_options: str | None = None
    replaced = {"bind": False, "socket": False, "log": False}
    for line in lines:
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if match := _SERVER_LINE.match(line):
            if server_options is None:
                server_options = match.group(2)
                out += [
                    f"{match.group(1)}server {name} 127.0.0.1:{server_port}{server_options}"
                    for name, server_port in servers.items()
                ]
            continue
        if stripped.startswith("bind "):
            out.append(f"{indent}bind 127.0.0.1:{port}")
            replaced["bind"] = True
        elif stripped.startswith("stats socket "):
            rest = stripped.split(None, 3)[3:] or [""]
            out.append(f"{indent}stats socket {stats_socket} {rest[0]}".rstrip())
            replaced["socket"] = True
        elif stripped.startswith("log ") and stripped != "log global":
            out.append(f"{indent}log {log}")
            replaced["log"] = True
        else:
            out.append(line)
    missing = [what for what, done in replaced.items() if not done]
    if server_options is None:
        missing.append("server")
    if missing:
        raise ValueError(f"the example HAProxy config has no {', '.join(missing)} line")
    return "\n".join(out) + "\n"


def parse_stat(text: str, backend: str = BACKEND) -> dict[str, str]:
    """{server: status} of one backend from `show stat` CSV ("UP", "DOWN", "UP 1/2",
    "MAINT", "no check", ...)."""
    body = text.lstrip("# ")
    rows = csv.DictReader(io.StringIO(body))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")
    }


class HAProxy:
    """One HAProxy on 127.0.0.1:`port` balancing over `servers` (name -> port on 127.0.0.1)."""

    def __init__(self, base_dir: Path, name: str, port: int, servers: dict[str, int]) -> None:
        if not _NAME.match(name) or not all(_NAME.match(s) for s in servers):
            raise ValueError("HAProxy and server names: letters, digits, '_', '.', '-' only")
        if not servers:
            raise ValueError("HAProxy needs at least one server")
        self.dir = Path(base_dir) / f"haproxy-{name}"
        self.name = name
        self.port = port
        self.servers = dict(servers)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.dir / "haproxy.cfg"

    @property
    def stats_socket(self) -> Path:
        return self.dir / "stats.sock"

    @property
    def log_file(self) -> Path:
        return self.dir / "haproxy.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def render(self) -> str:
        return render_config(
            EXAMPLE_CONFIG.read_text(),
            self.port,
            self.servers,
            self.stats_socket,
            "stdout format raw local0",  # -db keeps stdout, which goes to the log file
        )

    def start(self) -> None:
        """Write the config, check it, start HAProxy and wait until its frontend and stats
        socket answer. Starting a running one does nothing."""
        if self.pid is not None:
            return
        if not Path(HAPROXY).exists():
            raise TestbedUnavailable("haproxy not found: install the Debian package haproxy")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.render())
        checked = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if checked.returncode != 0:
            raise TestbedError(f"haproxy -c refused {self.config_file}: {checked.stderr.strip()}")
        self.stats_socket.unlink(missing_ok=True)
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not hit by a ^C meant for the test run
            )
        wait_until(
            self._serving,
            START_TIMEOUT,
            f"haproxy {self.name} to listen on 127.0.0.1:{self.port}",
            lambda: log_tail(self.log_file),
        )

    def _serving(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            code = self._proc.returncode if self._proc else None
            raise TestbedError(f"haproxy {self.name} exited {code}{log_tail(self.log_file)}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            self.command("show info")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """End HAProxy (open connections are cut) and reap it; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # hard stop; SIGUSR1 would wait for streams
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(OSError):
            self.stats_socket.unlink()

    def command(self, line: str) -> str:
        """One command on the stats socket (admin level), e.g. "disable server hpcfed/gw1"."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def server_states(self) -> dict[str, str]:
        """{server: status} of the backend, e.g. {"gw1": "UP", "gw2": "DOWN"}."""
        return parse_stat(self.command("show stat"))

    def wait_state(self, server: str, state: str, timeout: float = 10.0) -> None:
        """Wait until `server`'s status is exactly `state` (e.g. "UP", "DOWN")."""
        if server not in self.servers:
            raise ValueError(f"unknown server {server!r}; {self.name} has {list(self.servers)}")
        seen: list[str] = []

        def reached() -> bool:
            status = self.server_states().get(server, "")
            if not seen or seen[-1] != status:
                seen.append(status)
            return status == state

        started = time.monotonic()
        wait_until(
            reached,
            timeout,
            f"{server} to be {state} in haproxy {self.name}",
            lambda: f" (states seen: {' -> '.join(seen)}, {time.monotonic() - started:.1f}s)",
        )

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
