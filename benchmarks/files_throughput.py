"""File throughput of a real gateway against OpenSSH's own `sftp`, on the testbed.

Run from the repository root (as root, like the testbed)::

    .venv/bin/python -m benchmarks.files_throughput [--size-mib 512] [--repeat 3] [--markdown]

One run brings the testbed up (idempotent), starts `hpcfed serve` as a separate
process with a fresh data dir, issues a researcher token with `hpcfed token issue`,
and then, alternating in rounds, uploads and downloads one random file through
the gateway's HTTP file API (`PUT`/`GET /v1/centers/<center>/files/content`) and
with `sftp` straight to the center's sshd. Every transfer's size is checked, and
the sha256 once per method and direction, so a broken copy is never reported as
fast. The gateway's peak RSS growth (VmHWM - VmRSS at start, /proc/<pid>/status)
is measured per direction. All traffic stays on 127.0.0.1. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import aiohttp

from benchmarks.harness import (
    MIB,
    BenchError,
    Gateway,
    Target,
    cpu_seconds,
    interrupt,
    machine,
    proc_status,
    py_spy,
    read_text,
    reset_peak_rss,
    target_of,
)
from tests.testbed import Testbed, TestbedError

CHUNK = MIB  # client read/write unit, both directions
RATIO_TARGET = 0.8
RSS_TARGET_MIB = 100.0
SMALL_TIMEOUT = 120.0  # checksum, stat, delete requests
GW_REMOTE = "bench.bin"  # paths relative to the login's first root (its home)
SFTP_REMOTE = "bench-sftp.bin"
PIPE_REMOTE = "bench-pipe.bin"
UPLOAD, DOWNLOAD = "upload", "download"
#: The gateway; OpenSSH's sftp (the baseline); and, for reference only, OpenSSH's ssh
#: running the same remote commands as the gateway's bulk path, with no Python in between.
GATEWAY, SFTP, PIPE = "gateway", "sftp", "ssh-pipe"


# ------------------------------------------------------------ measurements


def machine_cpu() -> tuple[float, float, int]:
    """(busy, stolen) CPU seconds and context switches of the machine since boot."""
    lines = read_text("/proc/stat").splitlines()
    fields = [int(x) for x in lines[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    ctxt = next((int(x.split()[1]) for x in lines if x.startswith("ctxt ")), 0)
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick, ctxt


async def background_busy(seconds: float) -> float:
    """How many CPUs other work keeps busy: a measuring window with no transfer running."""
    busy0, _, _ = machine_cpu()
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    busy1, _, _ = machine_cpu()
    return (busy1 - busy0) / (time.perf_counter() - start)


def own_cpu() -> tuple[float, float]:
    """(CPU seconds of this process, of its waited-for children such as sftp)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


@dataclass
class Sample:
    """One timed transfer. CPU figures are seconds used during it."""

    method: str
    direction: str
    seconds: float = 0.0
    machine_busy: float = 0.0  # every process on the machine
    machine_steal: float = 0.0  # taken by the hypervisor from this VM
    switches: int = 0  # context switches on the machine
    harness: float = 0.0  # this process (the HTTP client, for the gateway)
    harness_children: float = 0.0  # sftp and its ssh
    gateway: float = 0.0  # the gateway's Python process
    gateway_children: float = 0.0  # its ssh children (bulk copies)
    rss_growth: int | None = None  # gateway only: VmHWM - VmRSS at start, bytes


@dataclass
class Run:
    size: int
    rss_start: int = 0
    peak_reset: bool = False
    background: list[float] = field(default_factory=list)  # busy CPUs with nothing running
    samples: list[Sample] = field(default_factory=list)

    def of(self, method: str, direction: str) -> list[Sample]:
        return [s for s in self.samples if s.method == method and s.direction == direction]

    def rates(self, method: str, direction: str) -> tuple[float, float]:
        """(best, median) in MB/s (10^6 bytes per second)."""
        rates = [self.size / s.seconds / 1e6 for s in self.of(method, direction)]
        return max(rates), statistics.median(rates)

    def rss_growth_mib(self, direction: str) -> float:
        return max(s.rss_growth or 0 for s in self.of(GATEWAY, direction)) / MIB

    def median(self, method: str, direction: str, name: str) -> float:
        return statistics.median(getattr(s, name) for s in self.of(method, direction))


def write_random(path: Path, size: int) -> str:
    """A file of `size` random bytes; its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


async def _file_chunks(f: IO[bytes]) -> AsyncIterator[bytes]:
    # The source is in the page cache (just written): a 1 MiB read does not hold the loop.
    while block := f.read(CHUNK):
        yield block


class Bench:
    """One run: the gateway's HTTP API and sftp, the same file, alternating."""

    def __init__(
        self, gateway: Gateway, token: str, target: Target, work: Path, size: int, timeout: float
    ) -> None:
        self.gw = gateway
        self.target = target
        self.work = work
        self.source = work / "source.bin"
        self.size = size
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"}
        self.files_url = f"{gateway.url}/v1/centers/{target.center}/files"
        self.run = Run(size)
        self.source_sha = ""
        self.verified: set[tuple[str, str]] = set()
        self.with_pipe = True
        self.idle_window = 2.0

    # -------------------------------------------- helpers

    def _session(self) -> aiohttp.ClientSession:
        # A large read buffer, so the client is not what limits a download.
        return aiohttp.ClientSession(headers=self.headers, read_bufsize=4 * MIB)

    async def _json(
        self, session: aiohttp.ClientSession, method: str, url: str, **kw: Any
    ) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=SMALL_TIMEOUT)
        async with session.request(method, url, timeout=timeout, **kw) as resp:
            body = await resp.read()
            data = json.loads(body) if body and resp.content_type == "application/json" else None
            return resp.status, data

    async def _remote_size(self, session: aiohttp.ClientSession, path: str) -> int:
        status, entry = await self._json(
            session, "GET", f"{self.files_url}/stat", params={"path": path}
        )
        if status != 200:
            raise BenchError(f"stat {path}: HTTP {status}: {entry}")
        return int(entry["size"])

    async def _remote_sha(self, session: aiohttp.ClientSession, path: str) -> str:
        status, body = await self._json(
            session, "GET", f"{self.files_url}/checksum", params={"path": path}
        )
        if status != 200:
            raise BenchError(f"checksum {path}: HTTP {status}: {body}")
        return str(body["sha256"])

    async def _verify_remote(self, session: aiohttp.ClientSession, method: str, path: str) -> None:
        size = await self._remote_size(session, path)
        if size != self.size:
            raise BenchError(
                f"{method} upload: {path} at the center has {size} bytes, not {self.size}"
            )
        if (method, UPLOAD) not in self.verified:
            sha = await self._remote_sha(session, path)
            if sha != self.source_sha:
                raise BenchError(f"{method} upload: {path} at the center has sha256 {sha}")
            self.verified.add((method, UPLOAD))

    async def _verify_local(self, method: str, path: Path) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        if size != self.size:
            raise BenchError(f"{method} download: {path} has {size} bytes, not {self.size}")
        if (method, DOWNLOAD) not in self.verified:
            sha = await asyncio.to_thread(sha256_file, path)
            if sha != self.source_sha:
                raise BenchError(f"{method} download: {path} has sha256 {sha}")
            self.verified.add((method, DOWNLOAD))

    @contextlib.contextmanager
    def _measure(self, method: str, direction: str) -> Iterator[Sample]:
        """Time a transfer, with the CPU it took; for the gateway, its peak RSS growth."""
        pid = self.gw.pid
        if method == GATEWAY:
            self.run.peak_reset = reset_peak_rss(pid) or self.run.peak_reset
        gw0, gwc0 = cpu_seconds(pid)
        own0, ownc0 = own_cpu()
        busy0, steal0, ctxt0 = machine_cpu()
        start = time.perf_counter()
        sample = Sample(method, direction)
        yield sample
        sample.seconds = time.perf_counter() - start
        busy1, steal1, ctxt1 = machine_cpu()
        own1, ownc1 = own_cpu()
        gw1, gwc1 = cpu_seconds(pid)
        sample.machine_busy, sample.machine_steal = busy1 - busy0, steal1 - steal0
        sample.switches = ctxt1 - ctxt0
        sample.harness, sample.harness_children = own1 - own0, ownc1 - ownc0
        sample.gateway, sample.gateway_children = gw1 - gw0, gwc1 - gwc0
        if method == GATEWAY:
            sample.rss_growth = proc_status(pid)["VmHWM"] - self.run.rss_start
        self.run.samples.append(sample)

    # -------------------------------------------- the four transfers

    async def gateway_upload(self, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        f = await asyncio.to_thread(self.source.open, "rb")
        try:
            with self._measure(GATEWAY, UPLOAD):
                async with session.put(
                    f"{self.files_url}/content",
                    params={"path": GW_REMOTE},
                    data=_file_chunks(f),
                    headers={
                        "Content-Length": str(self.size),
                        "Content-Type": "application/octet-stream",
                    },
                    timeout=timeout,
                ) as resp:
                    body = await resp.read()
        finally:
            f.close()
        if resp.status not in (200, 201):
            raise BenchError(f"gateway upload: HTTP {resp.status}: {body[:500]!r}")
        answered = json.loads(body).get("size")
        if answered != self.size:
            raise BenchError(f"gateway upload: the gateway wrote {answered} of {self.size} bytes")
        await self._verify_remote(session, GATEWAY, GW_REMOTE)

    async def gateway_download(self, session: aiohttp.ClientSession) -> None:
        out_path = self.work / "down-gateway.bin"
        out_path.unlink(missing_ok=True)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        out = await asyncio.to_thread(out_path.open, "wb")
        try:
            with self._measure(GATEWAY, DOWNLOAD):
                async with session.get(
                    f"{self.files_url}/content", params={"path": GW_REMOTE}, timeout=timeout
                ) as resp:
                    if resp.status != 200:
                        raise BenchError(
                            f"gateway download: HTTP {resp.status}: {(await resp.read())[:500]!r}"
                        )
                    async for block in resp.content.iter_chunked(CHUNK):
                        out.write(block)
                out.flush()
        finally:
            out.close()
        await self._verify_local(GATEWAY, out_path)
        out_path.unlink()

    async def _sftp(self, what: str, batch: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.target.sftp_argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await self._communicate(proc, f"sftp {what}", batch.encode())
        if proc.returncode != 0:
            raise BenchError(
                f"sftp {what} failed ({proc.returncode}): {err.decode()} {out.decode()}"
            )

    async def _communicate(
        self, proc: asyncio.subprocess.Process, what: str, data: bytes | None = None
    ) -> tuple[bytes, bytes]:
        """Its output, within the transfer timeout; killed if it overruns or we are stopped."""
        try:
            return await asyncio.wait_for(proc.communicate(data), self.timeout)
        except TimeoutError:
            raise BenchError(f"{what}: no end after {self.timeout:g} s") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def sftp_upload(self, session: aiohttp.ClientSession) -> None:
        with self._measure(SFTP, UPLOAD):
            await self._sftp(UPLOAD, f'put "{self.source}" "{SFTP_REMOTE}"\n')
        await self._verify_remote(session, SFTP, SFTP_REMOTE)

    async def _ssh(
        self, what: str, command: str, stdin: IO[bytes] | None, stdout: IO[bytes] | None
    ) -> None:
        """`ssh ... command`, its stdin or stdout a local file (the kernel copies, not us)."""
        proc = await asyncio.create_subprocess_exec(
            *self.target.ssh_argv(command),
            stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await self._communicate(proc, f"ssh {what}")
        if proc.returncode != 0:
            raise BenchError(f"ssh {what} failed ({proc.returncode}): {err.decode()}")

    async def pipe_upload(self, session: aiohttp.ClientSession) -> None:
        f = await asyncio.to_thread(self.source.open, "rb")
        try:
            # adapters.openssh.OpenSSH.write's remote command.
            command = f"exec dd of={PIPE_REMOTE} bs=1M seek=0 oflag=seek_bytes status=none"
            with self._measure(PIPE, UPLOAD):
                await self._ssh(UPLOAD, command, f, None)
        finally:
            f.close()
        await self._verify_remote(session, PIPE, PIPE_REMOTE)

    async def pipe_download(self, session: aiohttp.ClientSession) -> None:
        out_path = self.work / "down-pipe.bin"
        out_path.unlink(missing_ok=True)
        out = await asyncio.to_thread(out_path.open, "wb")
        try:
            # adapters.openssh.OpenSSH.read's remote command.
            command = (
                f"exec dd if={PIPE_REMOTE} bs=1M skip=0 count={self.size} "
                "iflag=skip_bytes,count_bytes status=none"
            )
            with self._measure(PIPE, DOWNLOAD):
                await self._ssh(DOWNLOAD, command, None, out)
        finally:
            out.close()
        await self._verify_local(PIPE, out_path)
        out_path.unlink()

    async def sftp_download(self, session: aiohttp.ClientSession) -> None:
        out_path = self.work / "down-sftp.bin"
        out_path.unlink(missing_ok=True)
        with self._measure(SFTP, DOWNLOAD):
            await self._sftp(DOWNLOAD, f'get "{SFTP_REMOTE}" "{out_path}"\n')
        await self._verify_local(SFTP, out_path)
        out_path.unlink()

    # -------------------------------------------- the run

    async def measure(self, repeat: int, profile: Path | None) -> Run:
        self.source_sha = await asyncio.to_thread(write_random, self.source, self.size)
        self.run.rss_start = proc_status(self.gw.pid)["VmRSS"]
        async with self._session() as session:
            try:
                # Fails fast on a bad token or an unreachable center; not timed.
                status, body = await self._json(session, "GET", f"{self.files_url}/roots")
                if status != 200:
                    raise BenchError(f"GET files/roots: HTTP {status}: {body}")
                self.run.background.append(await background_busy(self.idle_window))
                ups = [self.gateway_upload, self.sftp_upload]
                downs = [self.gateway_download, self.sftp_download]
                if self.with_pipe:
                    ups.append(self.pipe_upload)
                    downs.append(self.pipe_download)
                for i in range(repeat):
                    # Rotate which method goes first, so none always meets a warmer cache.
                    for transfers in (ups, downs):
                        for transfer in (
                            transfers[i % len(transfers) :] + transfers[: i % len(transfers)]
                        ):
                            await transfer(session)
                    print(f"  round {i + 1}/{repeat} done", file=sys.stderr, flush=True)
                self.run.background.append(await background_busy(self.idle_window))
                if profile is not None:
                    await self.profile(session, profile)
            finally:
                await self.cleanup(session)
        return self.run

    async def profile(self, session: aiohttp.ClientSession, out_dir: Path) -> None:
        """One more upload and download, untimed, with py-spy sampling the gateway."""
        for direction, transfer in (
            (UPLOAD, self.gateway_upload),
            (DOWNLOAD, self.gateway_download),
        ):
            raw = out_dir / f"gateway-{direction}.txt"
            summary = await py_spy(self.gw.pid, raw, partial(transfer, session))
            if summary is None:
                print("  --profile: py-spy not found; skipped", file=sys.stderr)
                return
            self.run.samples.pop()  # the profiled transfer is not a measurement
            print(f"  profile of the gateway's {direction}: {raw}", file=sys.stderr)
            print(summary, file=sys.stderr)

    async def cleanup(self, session: aiohttp.ClientSession) -> None:
        for path in (GW_REMOTE, SFTP_REMOTE, PIPE_REMOTE):
            try:
                status, _ = await self._json(
                    session, "DELETE", self.files_url, params={"path": path}
                )
                ok = status in (204, 404)
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if not ok:  # the gateway is gone or refused: remove it with sftp
                with contextlib.suppress(BenchError):
                    await self._sftp("cleanup", f'-rm "{path}"\n')


# ------------------------------------------------------------ report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def rows(run: Run) -> list[dict[str, Any]]:
    out = []
    for direction in (UPLOAD, DOWNLOAD):
        gw_best, gw_med = run.rates(GATEWAY, direction)
        ssh_best, ssh_med = run.rates(SFTP, direction)
        ratio = gw_med / ssh_med
        rss = run.rss_growth_mib(direction)
        out.append(
            {
                "direction": direction,
                "gw_best": gw_best,
                "gw_median": gw_med,
                "ssh_best": ssh_best,
                "ssh_median": ssh_med,
                "ratio": ratio,
                "ratio_best": gw_best / ssh_best,
                "rss": rss,
                "ratio_ok": ratio >= RATIO_TARGET,
                "rss_ok": rss < RSS_TARGET_MIB,
            }
        )
    return out


def methods(run: Run) -> list[str]:
    return [m for m in (GATEWAY, SFTP, PIPE) if run.of(m, UPLOAD)]


def reference_line(run: Run) -> str:
    if not run.of(PIPE, UPLOAD):
        return ""
    parts = []
    for direction in (UPLOAD, DOWNLOAD):
        best, med = run.rates(PIPE, direction)
        parts.append(f"{direction} {best:.1f} / {med:.1f} MB/s")
    return (
        "Reference, not judged: OpenSSH ssh running the gateway's own remote commands "
        "(dd of= / dd if=), local file as its stdin/stdout, no Python: " + ", ".join(parts) + "."
    )


def background_line(run: Run) -> str:
    shown = ", ".join(f"{b:.2f}" for b in run.background)
    return f"Background load: CPUs busy with no transfer running (before, after): {shown}."


def each_rate(run: Run, method: str, direction: str) -> str:
    return " ".join(f"{run.size / s.seconds / 1e6:.1f}" for s in run.of(method, direction))


def cpu_rows(run: Run, nproc: int) -> list[list[str]]:
    """Median CPU seconds per transfer, by who spent them."""
    table = []
    for direction in (UPLOAD, DOWNLOAD):
        for method in methods(run):
            m = {
                name: run.median(method, direction, name)
                for name in (
                    "seconds", "machine_busy", "machine_steal", "switches", "gateway",
                    "gateway_children", "harness", "harness_children",
                )
            }  # fmt: skip
            mine = m["harness"] + m["harness_children"]
            gateway = m["gateway"] + m["gateway_children"]
            if method != GATEWAY:  # the idle gateway is not part of this transfer
                gateway = 0.0
            rest = m["machine_busy"] - mine - gateway
            busy = 100 * m["machine_busy"] / (nproc * m["seconds"])
            table.append(
                [
                    direction,
                    method,
                    f"{m['seconds']:.2f}",
                    f"{m['machine_busy']:.2f} ({busy:.0f}%)",
                    f"{m['machine_steal']:.2f}",
                    f"{m['switches'] / 1000:.0f}k",
                    f"{m['gateway']:.2f}" if method == GATEWAY else "-",
                    f"{m['gateway_children']:.2f}" if method == GATEWAY else "-",
                    f"{m['harness']:.2f}" if method == GATEWAY else "-",
                    f"{m['harness_children']:.2f}" if method != GATEWAY else "-",
                    f"{rest:.2f}",
                ]
            )
    return table


CPU_HEADER = [
    "direction", "method", "wall s", "machine busy CPU-s", "steal", "ctx switches",
    "gateway py", "gateway's ssh", "HTTP client", "sftp+ssh or ssh", "rest (sshd side, other)",
]  # fmt: skip


def _targets_line(run: Run) -> str:
    peak = "peak reset before each transfer" if run.peak_reset else "cumulative peak"
    return (
        f"Targets: median ratio gateway/sftp >= {RATIO_TARGET} both ways; gateway peak RSS "
        f"growth < {RSS_TARGET_MIB:g} MiB (VmHWM - VmRSS at start, which was "
        f"{run.rss_start / MIB:.1f} MiB; {peak})."
    )


def text_report(run: Run, info: dict[str, str], repeat: int) -> str:
    lines = [
        f"File throughput, {run.size / MIB:g} MiB, {repeat} runs per method and direction "
        "(MB/s = 10^6 bytes/s; best / median)",
        "",
        f"{'direction':10} {'gateway MB/s':>15} {'OpenSSH sftp MB/s':>18} "
        f"{'gw/sftp':>11} {'gw RSS +MiB':>12}  result",
    ]
    for r in rows(run):
        lines.append(
            f"{r['direction']:10} {r['gw_best']:7.1f} /{r['gw_median']:6.1f} "
            f"{r['ssh_best']:10.1f} /{r['ssh_median']:6.1f} "
            f"{r['ratio_best']:5.2f} /{r['ratio']:4.2f} {r['rss']:12.1f}  "
            f"{verdict(r['ratio_ok'] and r['rss_ok'])} (ratio {verdict(r['ratio_ok'])}, "
            f"RSS {verdict(r['rss_ok'])})"
        )
    lines += ["", _targets_line(run), reference_line(run), background_line(run)]
    lines += ["", "each run, MB/s in order:"]
    for direction in (UPLOAD, DOWNLOAD):
        for method in methods(run):
            lines.append(f"  {direction:9} {method:8} {each_rate(run, method, direction)}")
    table = [CPU_HEADER, *cpu_rows(run, int(info["nproc"]))]
    widths = [max(len(row[i]) for row in table) for i in range(len(CPU_HEADER))]
    lines += ["", "CPU seconds per transfer (median):"]
    for row in table:
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    lines += ["", "machine:"] + [f"  {k:16} {v}" for k, v in info.items()]
    return "\n".join(lines)


def markdown_report(run: Run, info: dict[str, str], repeat: int, command: str) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"## {when}: {run.size / MIB:g} MiB, {repeat} runs per method and direction",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "| direction | gateway MB/s best / median | OpenSSH sftp MB/s best / median "
        "| ratio gw/sftp best / median | gateway peak RSS growth MiB | result |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows(run):
        out.append(
            f"| {r['direction']} | {r['gw_best']:.1f} / {r['gw_median']:.1f} "
            f"| {r['ssh_best']:.1f} / {r['ssh_median']:.1f} "
            f"| {r['ratio_best']:.2f} / {r['ratio']:.2f} | {r['rss']:.1f} "
            f"| {verdict(r['ratio_ok'] and r['rss_ok'])} (ratio {verdict(r['ratio_ok'])}, "
            f"RSS {verdict(r['rss_ok'])}) |"
        )
    out += ["", _targets_line(run) + " MB/s = 10^6 bytes/s.", ""]
    if reference_line(run):
        out += [reference_line(run), ""]
    out += [background_line(run), "", "Each run, MB/s in order: "]
    out[-1] += "; ".join(
        f"{direction} {method}: {each_rate(run, method, direction)}"
        for direction in (UPLOAD, DOWNLOAD)
        for method in methods(run)
    )
    out += [
        "",
        "CPU seconds per transfer (median; machine busy % is of nproc x wall time):",
        "",
        "| " + " | ".join(CPU_HEADER) + " |",
        "| " + " | ".join(["---"] * 2 + ["---:"] * (len(CPU_HEADER) - 2)) + " |",
    ]
    out += ["| " + " | ".join(row) + " |" for row in cpu_rows(run, int(info["nproc"]))]
    out.append("")
    return "\n".join(out)


# ------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.files_throughput",
        description="gateway file API vs OpenSSH sftp, on the testbed",
    )
    p.add_argument("--size-mib", type=int, default=512, help="file size (default 512)")
    p.add_argument("--repeat", type=int, default=3, help="runs per method and direction")
    p.add_argument("--center", default="centera", help="testbed center (default centera)")
    p.add_argument("--user", default="alice", help="federation user (default alice)")
    p.add_argument(
        "--timeout", type=float, help="seconds one transfer may take (default 60 + 1 per MiB)"
    )
    p.add_argument(
        "--markdown",
        nargs="?",
        const="-",
        metavar="FILE",
        help="also print a Markdown block; with FILE, append it there too",
    )
    p.add_argument(
        "--profile", type=Path, metavar="DIR", help="after the runs, py-spy the gateway into DIR"
    )
    p.add_argument(
        "--no-ssh-pipe",
        action="store_true",
        help="skip the reference runs of plain ssh with the gateway's remote commands",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=2.0,
        help="length of the background-load windows before and after the runs (default 2)",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (gateway log)")
    args = p.parse_args(argv)
    if args.size_mib < 1 or args.repeat < 1:
        p.error("--size-mib and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM and SIGINT (even if inherited as ignored) unwind through the clean-up.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command = shlex.join(
        [".venv/bin/python", "-m", "benchmarks.files_throughput", *(argv or sys.argv[1:])]
    )
    size = args.size_mib * MIB
    timeout = args.timeout or 60.0 + args.size_mib
    info = machine()
    tb = Testbed()
    print("testbed: up ...", file=sys.stderr, flush=True)
    try:
        tb.up()
        target = target_of(tb, args.center, args.user)
    except (TestbedError, BenchError, ValueError, OSError) as exc:
        print(f"benchmark failed: testbed: {exc}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="hpcfed-bench-"))
    gateway = Gateway(tb.gateway_config, work / "data", work / "gateway.log")
    try:
        url = gateway.start()
        print(f"gateway: pid {gateway.pid} at {url}", file=sys.stderr, flush=True)
        token = gateway.issue_token(args.user, "researcher", "1h")
        bench = Bench(gateway, token, target, work, size, timeout)
        bench.with_pipe = not args.no_ssh_pipe
        bench.idle_window = args.idle_seconds
        run = asyncio.run(bench.measure(args.repeat, args.profile))
    except BenchError as exc:
        print(f"benchmark failed: {exc}{gateway.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark interrupted", file=sys.stderr)
        return 130
    finally:
        code = gateway.stop()
        print(f"gateway: stopped (exit status {code})", file=sys.stderr)
        if args.keep_temp:
            print(f"temp dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(text_report(run, info, args.repeat))
    if args.markdown:
        block = markdown_report(run, info, args.repeat, command)
        print()
        print(block)
        if args.markdown != "-":
            with Path(args.markdown).open("a", encoding="utf-8") as f:
                f.write(block + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
