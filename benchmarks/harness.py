"""What every benchmark shares: the machine, /proc readings, a real gateway process,
a center's sshd as OpenSSH sees it, py-spy summaries, and the figure table.

Run nothing from here; each benchmark module has its own entry point, and
`python -m benchmarks` runs them all (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import json
import math
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import yaml

from tests.testbed import Testbed, TestbedError
from tests.testbed.centers import PLAIN_CENTER_IDS

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MIB = 1 << 20
START_TIMEOUT = 60.0  # gateway start, token issue
STOP_TIMEOUT = 30.0
LISTENING_RE = re.compile(rb"hpcfed gateway listening on (\S+)\s")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


# ------------------------------------------------------------ the machine


def read_text(path: str) -> str:
    """A /proc or log file as text; "" when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine() -> dict[str, str]:
    cpuinfo = read_text("/proc/cpuinfo")
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in read_text("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    try:
        ssh = subprocess.run(
            ["ssh", "-V"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
        openssh = (ssh.stderr or ssh.stdout).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        openssh = f"unknown ({exc})"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": f"{mem_kib / MIB:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "aiohttp": aiohttp.__version__,
        "openssh": openssh,
        "load before run": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# ------------------------------------------------------------ /proc of the gateway


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM ... of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key.startswith("Vm") and len(parts) == 2 and parts[1] == "kB":
            values[key] = int(parts[0]) * 1024
    return values


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, needs ptrace rights); True if done."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on; [1] is the ppid, [11:15] the CPU times."""
    return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()


def child_ticks(pid: int) -> dict[int, int]:
    """CPU ticks of each running child of `pid` (and of its reaped children), by pid."""
    ticks = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[1] == str(pid):
            ticks[int(entry.name)] = sum(int(x) for x in fields[11:15])
    return ticks


def _live_children_cpu(pid: int) -> float:
    """CPU ticks of the running children of `pid` (and of their reaped children)."""
    return sum(child_ticks(pid).values())


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of the process itself, of its children, running or reaped).

    A child (`ssh`) may still be running or just reaped when a transfer ends, so the
    running ones are counted too; read again if one was reaped meanwhile.
    """
    tick = os.sysconf("SC_CLK_TCK")
    for _ in range(10):
        before = _stat_fields(pid)
        live = _live_children_cpu(pid)
        after = _stat_fields(pid)
        if before[13:15] == after[13:15]:
            break
    utime, stime, cutime, cstime = (int(x) for x in after[11:15])
    return (utime + stime) / tick, (cutime + cstime + live) / tick


# ------------------------------------------------------------ the gateway process


class ListeningProcess:
    """A server child process that prints `... listening on URL` once it serves:
    started (bounded wait for that line), its output kept in a log, stopped."""

    what = "the server"  # for messages
    listening = LISTENING_RE  # its line once it serves; group 1 is the URL

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._log: IO[bytes] | None = None
        self._drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start it and wait for its 'listening on URL' line; returns the URL."""
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            bufsize=0,
        )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while (match := self.listening.search(seen)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.what} did not start in {timeout:g} s{self.log_tail()}")
                if not sel.select(left):
                    continue
                block = os.read(fd, 4096)
                if not block:
                    code = self.proc.wait(timeout=STOP_TIMEOUT)
                    raise BenchError(f"{self.what} exited ({code}) at start{self.log_tail()}")
                seen += block
        self._log.write(seen)
        # Whatever else it prints goes to the log, so the pipe never fills.
        self._drain = threading.Thread(target=self._copy_stdout, daemon=True)
        self._drain.start()
        self.url = match.group(1).decode()
        return self.url

    def _copy_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self._log is not None
        with contextlib.suppress(OSError, ValueError):
            while block := self.proc.stdout.read(65536):
                self._log.write(block)

    def log_tail(self, lines: int = 20) -> str:
        text = read_text(str(self.log_path)).splitlines()[-lines:]
        return f"\n  {self.what}'s log:\n    " + "\n    ".join(text) if text else ""

    def stop(self) -> int | None:
        """SIGTERM, wait (bounded), SIGKILL if it would not stop; its exit status."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    code = self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    code = self.proc.wait(timeout=STOP_TIMEOUT)
            else:
                code = self.proc.returncode
        if self._drain is not None:
            self._drain.join(timeout=5)
        if self._log is not None:
            self._log.close()
        return code


class Gateway(ListeningProcess):
    """A real `hpcfed serve` process: started, given tokens, stopped."""

    what = "the gateway"

    def __init__(
        self, config: Path, data_dir: Path, log: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPCFED_")}
        env["HPCFED_DATA_DIR"] = str(data_dir)
        env.update(extra_env or {})  # e.g. PGPASSFILE for a postgres store
        serve = self.hpcfed("serve", "--config", str(config), "--port", "0")
        super().__init__(serve, log, env)

    def hpcfed(self, *args: str) -> list[str]:
        return [str(VENV_BIN / "hpcfed"), *args]

    def start(self, timeout: float = START_TIMEOUT) -> str:
        url = super().start(timeout)
        self._check_url()
        self._check_process()
        return url

    def _check_url(self) -> None:
        host = urllib.parse.urlsplit(self.url).hostname or ""
        if not ipaddress.ip_address(host).is_loopback:
            raise BenchError(f"the gateway listens on {self.url}, not on loopback")

    def _check_process(self) -> None:
        """The pid spawned must be the Python process that serves (no wrapper in between)."""
        exe = Path(f"/proc/{self.pid}/exe").resolve().name
        cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        if not exe.startswith("python") or b"serve" not in cmdline:
            raise BenchError(f"pid {self.pid} is {exe} {cmdline!r}, not the serving Python")

    def issue_token(self, user: str, role: str, ttl: str = "1h") -> str:
        argv = self.hpcfed(
            "--json", "token", "issue", "--config", str(self.config),
            "--user", user, "--role", role, "--ttl", ttl,
        )  # fmt: skip
        done = subprocess.run(
            argv,
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise BenchError(f"hpcfed token issue failed ({done.returncode}): {done.stderr}")
        token = json.loads(done.stdout)["token"]
        assert isinstance(token, str)
        return token


# ------------------------------------------------------------ the center, as sftp sees it


@dataclass(frozen=True)
class Target:
    center: str
    user: str  # the federation user (token)
    login: str  # the login at the center
    host: str
    port: int
    key: Path
    known_hosts: Path

    def _options(self) -> list[str]:
        return [
            "-F", "/dev/null", "-i", str(self.key),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        ]  # fmt: skip

    def sftp_argv(self) -> list[str]:
        return ["sftp", "-b", "-", *self._options(), "-P", str(self.port), self.destination]

    def ssh_argv(self, command: str) -> list[str]:
        """The shape of the gateway's own bulk `ssh` (adapters.openssh), without its agent."""
        return [
            "ssh", *self._options(), "-T", "-x", "-a", "-o", "Compression=no",
            "-p", str(self.port), self.destination, "--", command,
        ]  # fmt: skip

    @property
    def destination(self) -> str:
        return f"{self.login}@{self.host}"


def target_of(tb: Testbed, center: str, user: str) -> Target:
    """The center's sshd and `user`'s login there, from the gateway's center file."""
    doc = yaml.safe_load((tb.gateway_config.parent / "centers" / f"{center}.yaml").read_text())
    ssh = doc["ssh"]
    login = doc.get("users", {}).get(user, {}).get("login", user)
    info = tb.center(center)
    if int(ssh["port"]) != info.ssh_port:
        raise BenchError(f"{center}: center file port {ssh['port']} != testbed {info.ssh_port}")
    if not ipaddress.ip_address(ssh["host"]).is_loopback:
        raise BenchError(f"{center}: sshd at {ssh['host']} is not on loopback")
    return Target(
        center=center,
        user=user,
        login=login,
        host=ssh["host"],
        port=info.ssh_port,
        key=tb.user_key(login),
        known_hosts=tb.known_hosts,
    )


def summarize_profile(raw: Path, top: int = 8) -> str:
    """Where the gateway's threads were (py-spy raw stacks, idle ones included).

    The event loop is the thread whose stack starts at the module; it waits in the
    selector's `select` when idle. Other threads (to_thread workers, the child watcher,
    paramiko's reader) are shown apart: they mostly wait.
    """
    loop: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for line in read_text(str(raw)).splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.strip().split(";")
        (loop if frames[0].startswith("<module>") else others)[frames[-1]] += int(count)
    total = sum(loop.values())
    if not total:
        return "    (no samples of the event loop)"
    idle = sum(n for leaf, n in loop.items() if leaf.startswith("EpollSelector.select"))
    lines = [
        f"    event loop: {total} samples, {100 * idle / total:.0f}% waiting in select; busiest:"
    ]
    busy = [(leaf, n) for leaf, n in loop.most_common() if not leaf.startswith("EpollSelector")]
    lines += [f"      {100 * n / total:5.1f}%  {leaf}" for leaf, n in busy[:top]]
    lines.append("    other threads (samples, mostly waiting):")
    lines += [f"      {n:6}  {leaf}" for leaf, n in others.most_common(4)]
    return "\n".join(lines)


# ------------------------------------------------------------ a gateway set up for load


def bench_config(tb: Testbed, work: Path, **overrides: object) -> Path:
    """A gateway config for benchmarks: the testbed's centers, vault and key, with the
    per-user rate limit lifted (a benchmark is one user making thousands of requests)
    and probes far apart (so the SSH commands counted are the ones measured).
    `overrides` replace top-level keys."""
    base = yaml.safe_load(tb.gateway_config.read_text(encoding="utf-8"))
    centers = tb.gateway_config.parent
    doc: dict[str, object] = {
        "data_dir": str(work / "data"),
        "listen": {"host": "127.0.0.1", "port": 0},
        "poll_interval": 2.0,
        # The three centers without accounting, as the baselines were measured on (the
        # accounting center would add its own polls and probes to every figure).
        "center_files": [
            str(centers / "centers" / f"{c}.yaml") for c in (*PLAIN_CENTER_IDS, "local")
        ],
        "auth": {"bootstrap_user": None},
        "vault": base["vault"],
        "limits": {"rate": 1e6, "burst": 1_000_000, "max_body": "16MiB"},
        "health": {"probe_interval": 3600.0},
        "admission": {"required": False},
    }
    doc.update(overrides)
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric_sum(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


# ------------------------------------------------------------ TCP connections to sshd


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(fd.path)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    return inodes


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/<pid>/task/<tid>/children: the gateway's
    `ssh` children (bulk copies) hold their connections in their own fds."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError, ValueError):
                    todo += [int(c) for c in Path(task.path, "children").read_text().split()]
    return tree


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_ESTABLISHED = 1


def _sock_diag_established(ports: set[int]) -> list[tuple[int, str]]:
    """(remote port, socket inode) of the established TCP sockets to `ports`, asked of
    the kernel over NETLINK_SOCK_DIAG (as `ss` does). Much cheaper than formatting
    /proc/net/tcp when a benchmark's clients hold hundreds of connections."""
    found: list[tuple[int, str]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5.0)
        for family in (socket.AF_INET, socket.AF_INET6):
            # struct inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid
            req = struct.pack("=BBBBI48x", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_ESTABLISHED)
            hdr = struct.pack(
                "=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0
            )
            nl.send(hdr + req)
            done = False
            while not done:
                data = nl.recv(1 << 16)
                if not data:
                    raise OSError("sock_diag: no answer")
                off = 0
                while off + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, off)
                    if kind == _NLMSG_DONE:
                        done = True
                        break
                    if kind == _NLMSG_ERROR:
                        raise OSError(-struct.unpack_from("=i", data, off + 16)[0], "sock_diag")
                    # struct inet_diag_msg: 4 bytes, then the sockid (dport at +2, network
                    # order), then expires, rqueue, wqueue, uid and the inode at +68.
                    dport = struct.unpack_from("!H", data, off + 16 + 6)[0]
                    if dport in ports:
                        inode = struct.unpack_from("=I", data, off + 16 + 68)[0]
                        found.append((dport, str(inode)))
                    off += (length + 3) & ~3
    return found


@functools.cache
def _established_to(ports: frozenset[int]) -> re.Pattern[str]:
    """A /proc/net/tcp{,6} line in state 01 (ESTABLISHED) to one of `ports`:
    group 1 the remote port (hex), group 2 the socket inode."""
    alternatives = "|".join(f"{port:04X}" for port in sorted(ports))
    return re.compile(
        rf"^\s*\d+:\s+[0-9A-F]+:[0-9A-F]+\s+[0-9A-F]+:({alternatives})\s+01\s+(?:\S+\s+){{5}}(\d+)",
        re.MULTILINE,
    )


def tcp_connections(
    pid: int, ports: set[int], known: dict[str, bool] | None = None
) -> dict[int, int]:
    """Established TCP connections that process `pid` and its descendants hold to
    loopback `ports` ({port: count}), from the kernel's socket table (sock_diag, or
    /proc/net/tcp{,6} where netlink is refused) and their socket fds.

    `known` (socket inode -> held by them), kept by the caller between calls, spares
    reading every fd again (hundreds while a benchmark's clients are connected) unless
    a connection not seen before is there."""
    counts = dict.fromkeys(ports, 0)
    if not ports:
        return counts
    known = {} if known is None else known
    try:
        found = _sock_diag_established(ports)
    except OSError:
        pattern = _established_to(frozenset(ports))
        found = [
            (int(m[1], 16), m[2])
            for table in ("/proc/net/tcp", "/proc/net/tcp6")
            for m in pattern.finditer(read_text(table))
        ]
    inodes = {inode for _, inode in found}
    for gone in known.keys() - inodes:
        del known[gone]
    if inodes - known.keys():
        mine = set().union(*(_socket_inodes(p) for p in _process_tree(pid)))
        for inode in inodes - known.keys():
            known[inode] = inode in mine
    for port, inode in found:
        counts[port] += known[inode]
    return counts


class ConnectionWatch:
    """Samples, in a thread, how many TCP connections a process holds to each port;
    keeps the largest seen. Used as a context manager around a benchmark."""

    def __init__(self, pid: int, ports: dict[str, int], interval: float = 0.05) -> None:
        self.pid = pid
        self.ports = ports  # center id -> sshd port
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(ports, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        by_port = {port: center for center, port in self.ports.items()}
        known: dict[str, bool] = {}
        while not self._stop.is_set():
            for port, n in tcp_connections(self.pid, set(by_port), known).items():
                center = by_port[port]
                self.peak[center] = max(self.peak[center], n)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ------------------------------------------------------------ the table


@dataclass
class Figure:
    """One row of the table: a figure beside its baseline, measured in the same run."""

    bench: str  # "1 submit throughput" ...
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""  # e.g. ">= 2x", "< 200 MiB", "" (reported, not judged)
    met: bool | None = None  # None: not judged
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.value / self.baseline


def _num(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def table_rows(figures: list[Figure]) -> list[list[str]]:
    rows = []
    for f in figures:
        base = f"{_num(f.baseline)} ({f.baseline_name})" if f.baseline is not None else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        met = "-" if f.met is None else ("met" if f.met else "NOT MET")
        rows.append([f.bench, f.name, f"{_num(f.value)} {f.unit}", base, ratio, f.target, met])
    return rows


TABLE_HEADER = ["bench", "figure", "value", "baseline", "ratio", "target", "result"]


def text_table(figures: list[Figure]) -> str:
    rows = [TABLE_HEADER, *table_rows(figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    out = []
    for n, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(figures: list[Figure]) -> str:
    rows = table_rows(figures)
    out = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + " --- |" * len(TABLE_HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------ one run of the benchmarks


@dataclass
class Context:
    """What `python -m benchmarks` hands each benchmark module's `run(ctx)`."""

    tb: Testbed
    work: Path  # a fresh temp dir for this run; each benchmark makes its own subdir
    quick: bool = False  # smoke run: small counts, same code paths
    profile_dir: Path | None = None  # where py-spy output goes; None: no profiling
    #: (gateway label, center) -> most TCP connections the gateway held to its sshd.
    connections: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (gateway label, center) -> pooled connections the gateway reported (pool size).
    pool_sizes: dict[tuple[str, str], int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # lines for RESULTS.md

    def sshd_ports(self) -> dict[str, int]:
        return {c: self.tb.center(c).ssh_port for c in PLAIN_CENTER_IDS}

    @contextlib.contextmanager
    def gateway(
        self,
        label: str,
        seed_data: Path | None = None,
        extra_env: dict[str, str] | None = None,
        **overrides: object,
    ) -> Iterator[Gateway]:
        """A real `hpcfed serve` on `bench_config(**overrides)` in work/<label>, its TCP
        connections to every center's sshd watched while it runs (benchmark 5).
        `seed_data`: a data dir copied into the gateway's own before it starts (its
        store, keys), since the gateway's HPCFED_DATA_DIR is always work/<label>/data.
        `extra_env`: more variables for the gateway and its `hpcfed` commands."""
        work = self.work / label
        work.mkdir(parents=True, exist_ok=False)
        if seed_data is not None:
            shutil.copytree(seed_data, work / "data")
        config = bench_config(self.tb, work, **overrides)
        gw = Gateway(config, work / "data", work / "gateway.log", extra_env)
        try:
            gw.start()
            watch = ConnectionWatch(gw.pid, self.sshd_ports())
            try:
                with watch:
                    yield gw
                    self._pool_sizes(label, gw)
            finally:
                # Also when the benchmark failed: what the gateway held open is still so.
                for center, peak in watch.peak.items():
                    self.connections[(label, center)] = peak
        finally:
            gw.stop()

    def _pool_sizes(self, label: str, gw: Gateway) -> None:
        """hpcfed_ssh_pool_connections, read from the gateway's /metrics as an operator."""
        token = gw.issue_token("bench-operator", "operator")
        req = urllib.request.Request(  # noqa: S310 - the gateway's own loopback URL
            f"{gw.url}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            samples = scrape(resp.read().decode())
        for (name, labels), value in samples.items():
            if name == "hpcfed_ssh_pool_connections":
                center = dict(labels).get("center", "")
                self.pool_sizes[(label, center)] = int(value)


async def py_spy(
    pid: int, raw: Path, work: Callable[[], Awaitable[object]], *, idle: bool = True
) -> str | None:
    """Run `work` with py-spy sampling process `pid` into `raw` (raw stacks, idle ones
    too unless `idle=False`); the summary of where the event loop was, or None when
    py-spy is not installed (it is the `bench` extra, not a dependency)."""
    spy = shutil.which("py-spy", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    if spy is None:
        return None
    await asyncio.to_thread(raw.parent.mkdir, parents=True, exist_ok=True)
    argv = [spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking"]
    argv += ["--idle"] if idle else []
    proc = await asyncio.create_subprocess_exec(
        *argv, "--format", "raw", "--output", str(raw),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        # py-spy announces itself once attached.
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        if b"Sampling" not in line:
            raise BenchError(f"py-spy did not start: {line.decode(errors='replace')}")
        await work()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.communicate(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return summarize_profile(raw)


# ------------------------------------------------------------ running one benchmark alone


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so every process started is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def bench_main(
    prog: str, run_one: Callable[[Context], Awaitable[list[Figure]]], argv: list[str] | None
) -> int:
    """`python -m benchmarks.<module> [--quick] [--profile DIR] [--keep-temp]`: one
    benchmark alone, its table, notes and the machine. Exit status as `python -m
    benchmarks`: 1 if a target was not met or the benchmark failed, 130 if interrupted."""
    p = argparse.ArgumentParser(prog=f"python -m {prog}")
    p.add_argument("--quick", action="store_true", help="smoke run: small counts")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the gateway into DIR")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (gateway logs)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tb = Testbed()
    print("testbed: up ...", file=sys.stderr, flush=True)
    try:
        tb.up()
    except (TestbedError, OSError) as exc:
        print(f"benchmark failed: testbed: {exc}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="hpcfed-bench-"))
    ctx = Context(tb, work, quick=args.quick, profile_dir=args.profile)
    try:
        figures = asyncio.run(run_one(ctx))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep_temp:
            print(f"temp dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(text_table(figures))
    for note in ctx.notes:
        print()
        print(note)
    print("\nmachine:")
    for k, v in machine().items():
        print(f"  {k:16} {v}")
    return 1 if any(f.met is False for f in figures) else 0
