"""Benchmark 1: submission throughput of a real gateway against `sbatch` itself.

Run from the repository root (as root, like the testbed)::

    .venv/bin/python -m benchmarks.submit_throughput [--quick] [--profile DIR]

500 held jobs (`--quick`: 40) go to centera in each round, one method per round,
the center's queue emptied of them between rounds:

- gateway, `POST /v1/jobs/batch`, one HTTP client, 100 and 500 specs per request;
- gateway, `POST /v1/jobs` from 32 and 64 concurrent client tasks;
- baseline (a): a shell loop of `ssh ... sbatch` over one OpenSSH ControlMaster
  connection;
- baseline (b): the same `sbatch` loop run at the center (one ssh command), the
  scheduler's own rate for one client.

Jobs per second count from the first request to the last native id known. Every job
created is checked to be in `squeue`, and cancelled with its job directory removed
afterwards, also on errors. This module also holds what benchmarks 2 and 4 share
with it: held job specs, commands at a center over ssh, a ControlMaster, the batch
endpoint's client and the clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.harness import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    BenchError,
    Context,
    Figure,
    Target,
    bench_main,
    metric_sum,
    py_spy,
    scrape,
    target_of,
)
from tests.testbed import Testbed

BENCH = "1 submit throughput"
USER = "alice"
CENTER = "centera"
REQUEST_TIMEOUT = 300.0  # one HTTP request (a batch of 500 included)
COMMAND_TIMEOUT = 300.0  # one ssh command (a loop of 500 sbatch included)
QUEUE_TIMEOUT = 90.0  # cancelled jobs leaving squeue
BATCH_MAX = 1000  # specs per POST /v1/jobs/batch
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NATIVE_ID_RE = re.compile(r"^[0-9]+(_[0-9]+)?$")
#: The same held job for every baseline: submission measured, nothing ever runs.
SBATCH_HELD = "sbatch --hold --parsable --wrap true -o /dev/null"
#: How each kind of center is told to hold a job (the job's extra_directives).
HOLD = {"slurm": {"slurm": ["--hold"]}, "pbs": {"pbs": ["-h"]}}


# ------------------------------------------------------------ the centers


def center_doc(tb: Testbed, center: str) -> dict[str, Any]:
    doc = yaml.safe_load((tb.gateway_config.parent / "centers" / f"{center}.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def held_spec(tb: Testbed, center: str) -> dict[str, Any]:
    """The job spec every benchmark submits: `true`, held at the center."""
    kind = center_doc(tb, center)["type"]
    return {"center": center, "command": "true", "extra_directives": HOLD[kind]}


async def run_argv(
    argv: list[str], what: str, seconds: float = COMMAND_TIMEOUT, check: bool = True
) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a command; killed if it overruns or we are stopped."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds)
    except TimeoutError:
        raise BenchError(f"{what}: no end after {seconds:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    code = proc.returncode
    assert code is not None
    if check and code != 0:
        raise BenchError(f"{what} failed ({code}): {err.decode(errors='replace')[-2000:]}")
    return code, out.decode(errors="replace"), err.decode(errors="replace")


@dataclass
class Login:
    """A user's login at a center, reached with OpenSSH (a fresh connection per command)."""

    target: Target
    work_root: str  # the gateway's work_root there, e.g. "~/.hpcfed"

    @classmethod
    def of(cls, tb: Testbed, center: str, user: str = USER) -> Login:
        doc = center_doc(tb, center)
        return cls(target_of(tb, center, user), doc.get("scheduler", {}).get("work_root", ""))

    @property
    def center(self) -> str:
        return self.target.center

    async def sh(self, command: str, seconds: float = COMMAND_TIMEOUT) -> str:
        """stdout of `command` run by the login's shell at the center."""
        _, out, _ = await run_argv(
            self.target.ssh_argv(command), f"{self.center}: {command[:80]}", seconds
        )
        return out

    async def queued(self) -> set[str]:
        """Ids of the login's jobs that squeue lists (pending, running, ...)."""
        out = await self.sh(f"squeue -u {shlex.quote(self.target.login)} -h -o %i")
        return set(out.split())

    def jobs_dir(self) -> str:
        """The shell word of the gateway's job directories at the center."""
        root = self.work_root or "~/.hpcfed"
        if root.startswith("~/"):
            return '"$HOME"/' + shlex.quote(root[2:] + "/jobs")
        return shlex.quote(root.rstrip("/") + "/jobs")


@contextlib.asynccontextmanager
async def control_master(target: Target) -> AsyncIterator[list[str]]:
    """One OpenSSH master connection to the center (ControlPersist); yields the argv
    prefix of a client that reuses it. The master is stopped (-O exit, then killed)
    on the way out."""
    sock_dir = Path(tempfile.mkdtemp(prefix="hpcfed-cm-", dir="/tmp"))
    sock = str(sock_dir / "s")
    dest = ["-p", str(target.port), target.destination]
    options = target.ssh_argv("true")[1 : target.ssh_argv("true").index("-p")]
    pid: int | None = None
    try:
        # -f: backgrounds once authenticated; its output goes nowhere, so nothing waits
        # on a pipe the master keeps open.
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-M", "-S", sock, "-o", "ControlPersist=yes", "-N", "-f",
            *options, *dest,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            code = await asyncio.wait_for(proc.wait(), START_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BenchError(f"{target.center}: ssh ControlMaster did not start") from None
        if code != 0:
            raise BenchError(f"{target.center}: ssh ControlMaster failed ({code})")
        _, _, err = await run_argv(
            ["ssh", "-S", sock, "-O", "check", *dest], "ssh -O check", START_TIMEOUT
        )
        found = re.search(r"pid=(\d+)", err)
        pid = int(found.group(1)) if found else None
        yield ["ssh", "-S", sock, "-F", "/dev/null", *dest]
    finally:
        with contextlib.suppress(BenchError, OSError):
            await run_argv(
                ["ssh", "-S", sock, "-O", "exit", *dest], "ssh -O exit", STOP_TIMEOUT, False
            )
        if pid is not None:
            for _ in range(int(STOP_TIMEOUT / 0.05)):  # the master's exit, bounded
                if not _alive(pid):
                    break
                await asyncio.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


# ------------------------------------------------------------ jobs created, and their end


class JobsLost(BenchError):
    """Jobs created were not all queued at the center when counted."""


ENDED = frozenset(
    {
        "CANCELLED",
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "PREEMPTED",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)


@dataclass
class Created:
    """Every job a benchmark created, by center: native ids (to cancel) and gateway ids
    (whose job directories at the center are removed)."""

    logins: dict[str, Login]
    native: dict[str, set[str]] = field(default_factory=dict)
    gateway: dict[str, set[str]] = field(default_factory=dict)

    def add(self, center: str, native_id: str, gateway_id: str | None = None) -> None:
        if not NATIVE_ID_RE.match(native_id):
            raise BenchError(f"{center}: {native_id!r} is not a native job id")
        self.native.setdefault(center, set()).add(native_id)
        if gateway_id is not None:
            if not UUID_RE.match(gateway_id):
                raise BenchError(f"{gateway_id!r} is not a gateway job id")
            self.gateway.setdefault(center, set()).add(gateway_id)

    def count(self, center: str) -> int:
        return len(self.native.get(center, ()))

    async def check_queued(self, center: str, expected: int) -> None:
        """All `expected` jobs are in the center's squeue, not ended."""
        mine = self.native.get(center, set())
        login = self.logins[center]
        # -t all: ended jobs too (for MinJobAge), to tell what became of missing ones.
        out = await login.sh(f"squeue -u {shlex.quote(login.target.login)} -h -t all -o '%i %T'")
        states = dict(line.split(None, 1) for line in out.splitlines() if " " in line)
        ended = Counter(states[i] for i in mine if states.get(i) in ENDED)
        listed = sum(1 for i in mine if i in states and states[i] not in ENDED)
        if len(mine) != expected or listed != expected:
            raise JobsLost(
                f"{center}: {expected} jobs submitted, {len(mine)} ids known, {listed} of "
                f"them queued; ended: {dict(ended) or 'none'}, not listed: "
                f"{len(mine - set(states))} (a job cancelled by another user of the "
                "testbed, e.g. `scancel -u`, shows as CANCELLED)"
            )

    async def cleanup(self) -> None:
        """Cancel the jobs, wait (bounded) until squeue no longer lists them, remove
        their job directories; errors are printed, the rest goes on."""
        for center in sorted(set(self.native) | set(self.gateway)):
            try:
                await self._cleanup(center)
            except (BenchError, OSError) as exc:
                print(f"  clean-up at {center} failed: {exc}", file=sys.stderr)

    async def _cleanup(self, center: str) -> None:
        login = self.logins[center]
        ids = sorted(self.native.get(center, ()))
        for i in range(0, len(ids), 500):
            # scancel answers non-zero for ids already gone; what matters is the wait.
            await run_argv(
                login.target.ssh_argv("scancel " + " ".join(ids[i : i + 500])),
                f"{center}: scancel",
                check=False,
            )
        deadline = time.monotonic() + QUEUE_TIMEOUT
        while ids and (left := set(ids) & await login.queued()):
            if time.monotonic() > deadline:
                raise BenchError(f"{center}: {len(left)} cancelled jobs still in squeue")
            await asyncio.sleep(0.5)
        self.native.pop(center, None)
        dirs = sorted(self.gateway.get(center, ()))
        for i in range(0, len(dirs), 500):
            await login.sh(f"cd {login.jobs_dir()} && rm -rf -- " + " ".join(dirs[i : i + 500]))
        self.gateway.pop(center, None)


# ------------------------------------------------------------ the gateway's client


def session(token: str, connections: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


async def request_json(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as resp:
        body = await resp.read()
        try:
            return resp.status, json.loads(body) if body else None
        except ValueError:
            return resp.status, body[:500].decode(errors="replace")


async def ssh_commands(http: aiohttp.ClientSession, url: str, center: str) -> float:
    """hpcfed_ssh_commands_total at `center` (every outcome), from /metrics; `http`
    carries an operator's token."""
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
        if resp.status != 200:
            raise BenchError(f"GET /metrics: HTTP {resp.status}: {text[:300]}")
    return metric_sum(scrape(text), "hpcfed_ssh_commands_total", center=center)


async def has_batch_endpoint(http: aiohttp.ClientSession, url: str) -> bool:
    """Whether the gateway serves POST /v1/jobs/batch (an empty list is refused, 4xx)."""
    status, _ = await request_json(http, "POST", f"{url}/v1/jobs/batch", json={"jobs": []})
    return status not in (404, 405)


async def submit_batch(
    http: aiohttp.ClientSession, url: str, specs: list[dict[str, Any]], created: Created
) -> None:
    """POST /v1/jobs/batch; every job must come back 201 with its native id."""
    status, body = await request_json(http, "POST", f"{url}/v1/jobs/batch", json={"jobs": specs})
    if status not in (201, 207) or not isinstance(body, dict):
        raise BenchError(f"POST /v1/jobs/batch: HTTP {status}: {str(body)[:500]}")
    results = body.get("results", [])
    for r in results:  # record what was created before judging
        job = r.get("job") or {}
        if job.get("native_id"):
            created.add(job["center"], job["native_id"], job["id"])
    bad = [
        r for r in results if r.get("status") != 201 or not (r.get("job") or {}).get("native_id")
    ]
    if status != 201 or len(results) != len(specs) or bad:
        raise BenchError(
            f"POST /v1/jobs/batch: HTTP {status}, {len(results)} results for {len(specs)} "
            f"specs, {len(bad)} not 201 with a native id; first: {str(bad[:1])[:500]}"
        )


async def submit_one(
    http: aiohttp.ClientSession, url: str, spec: dict[str, Any], created: Created
) -> dict[str, Any]:
    """POST /v1/jobs; the answer must be 201 with the native id."""
    status, job = await request_json(http, "POST", f"{url}/v1/jobs", json=spec)
    if isinstance(job, dict) and job.get("native_id"):
        created.add(job["center"], job["native_id"], job["id"])
    if status != 201 or not isinstance(job, dict) or not job.get("native_id"):
        raise BenchError(f"POST /v1/jobs: HTTP {status}: {str(job)[:500]}")
    return job


# ------------------------------------------------------------ the rounds


async def gateway_batch(
    http: aiohttp.ClientSession, url: str, spec: dict[str, Any], n: int, size: int, c: Created
) -> float:
    """Seconds for `n` jobs in batches of `size`, one request after the other."""
    start = time.perf_counter()
    for i in range(0, n, size):
        await submit_batch(http, url, [spec] * min(size, n - i), c)
    return time.perf_counter() - start


async def gateway_concurrent(
    http: aiohttp.ClientSession, url: str, spec: dict[str, Any], n: int, tasks: int, c: Created
) -> float:
    """Seconds for `n` single submissions from `tasks` concurrent clients."""
    left = n

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await submit_one(http, url, spec, c)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(tasks):
            group.create_task(client())
    return time.perf_counter() - start


def _record_ids(out: str, center: str, created: Created) -> None:
    for line in out.split():
        created.add(center, line.split(";", 1)[0])


async def ssh_loop(login: Login, n: int, created: Created) -> float:
    """Baseline (a): n times `ssh <mux> sbatch`, from a shell loop here."""
    async with control_master(login.target) as ssh:
        client = shlex.join([*ssh, *SBATCH_HELD.split()])
        loop = f"for i in $(seq {n}); do {client} || exit 1; done"
        start = time.perf_counter()
        code, out, err = await run_argv(["bash", "-c", loop], "ssh sbatch loop", check=False)
        seconds = time.perf_counter() - start
    _record_ids(out, login.center, created)
    if code != 0:
        raise BenchError(f"ssh sbatch loop failed ({code}): {err[-2000:]}")
    return seconds


async def local_loop(login: Login, n: int, created: Created) -> float:
    """Baseline (b): the sbatch loop run at the center, one ssh command."""
    loop = f"for i in $(seq {n}); do {SBATCH_HELD} || exit 1; done"
    start = time.perf_counter()
    code, out, err = await run_argv(
        login.target.ssh_argv(loop), "sbatch loop at the center", check=False
    )
    seconds = time.perf_counter() - start
    _record_ids(out, login.center, created)
    if code != 0:
        raise BenchError(f"sbatch loop at the center failed ({code}): {err[-2000:]}")
    return seconds


@dataclass
class Round:
    name: str
    jobs: int
    seconds: float
    commands: float | None = None  # SSH commands the gateway ran at the center meanwhile

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


async def run(ctx: Context) -> list[Figure]:
    n = 40 if ctx.quick else 500
    sizes = (10, 40) if ctx.quick else (100, 500)
    tasks_tried = (32, 64)
    login = Login.of(ctx.tb, CENTER)
    created = Created({CENTER: login})
    spec = held_spec(ctx.tb, CENTER)
    rounds: list[Round] = []
    by_size: dict[int, Round] = {}
    batch = False

    async def round_(
        name: str,
        measure: Callable[[], Awaitable[float]],
        commands: Callable[[], Awaitable[float]] | None = None,
    ) -> Round:
        used: float | None = None
        for attempt in (1, 2):
            try:
                before = await commands() if commands else 0.0
                seconds = await measure()
                used = await commands() - before if commands else None
                await created.check_queued(CENTER, n)
                await created.check_queued(CENTER, n)
                break
            except JobsLost as exc:
                # Another user of the testbed may cancel this login's jobs meanwhile:
                # the round is run once more, and a second loss ends the benchmark.
                if attempt == 2:
                    raise
                print(f"  {BENCH}: {name}: {exc}; once more", file=sys.stderr, flush=True)
            finally:
                await created.cleanup()
        r = Round(name, n, seconds, used)
        rounds.append(r)
        print(f"  {BENCH}: {name}: {r.rate:.1f} jobs/s", file=sys.stderr, flush=True)
        return r

    try:
        # Jobs of this login that were there before (another user of the testbed) are
        # left alone: only the ids this benchmark created are counted and cancelled.
        with ctx.gateway("submit") as gw:
            token = gw.issue_token(USER, "researcher")
            op = gw.issue_token("bench-op", "operator")
            async with session(token) as http, session(op) as ophttp:

                async def commands() -> float:
                    return await ssh_commands(ophttp, gw.url, CENTER)

                batch = await has_batch_endpoint(http, gw.url)
                if batch:
                    for size in sizes:
                        by_size[size] = await round_(
                            f"gateway batch {size}/request",
                            partial(gateway_batch, http, gw.url, spec, n, size, created),
                            commands,
                        )
                for tasks in tasks_tried:
                    await round_(
                        f"gateway concurrent, {tasks} clients",
                        partial(gateway_concurrent, http, gw.url, spec, n, tasks, created),
                        commands,
                    )
                if ctx.profile_dir is not None and batch:
                    raw = ctx.profile_dir / "submit-batch.txt"
                    size = max(sizes, key=lambda s: by_size[s].rate)
                    try:
                        summary = await py_spy(
                            gw.pid, raw, lambda: gateway_batch(http, gw.url, spec, n, size, created)
                        )
                    finally:
                        await created.cleanup()
                    ctx.notes.append(
                        f"Benchmark 1, py-spy of the gateway during {n} jobs in batches of "
                        f"{size} ({raw}):\n{summary or '    py-spy not found; skipped'}"
                    )
        ssh_a = await round_(
            "(a) ssh+ControlMaster sbatch loop", partial(ssh_loop, login, n, created)
        )
        ssh_b = await round_(
            "(b) sbatch loop at the center", partial(local_loop, login, n, created)
        )
    finally:
        await created.cleanup()
    ctx.notes.append(round_notes(rounds, n))
    return figures(rounds, ssh_a, ssh_b, n, batch)


def round_notes(rounds: list[Round], n: int) -> str:
    lines = [f"Benchmark 1, the rounds ({n} held jobs each at {CENTER}, in this order):"]
    for r in rounds:
        line = f"    {r.name}: {r.seconds:.2f} s, {r.rate:.1f} jobs/s"
        if r.commands is not None:
            line += (
                f", {r.commands:.0f} SSH commands at {CENTER} ({r.commands / r.jobs:.2f} per "
                "job, the poller's included)"
            )
        lines.append(line)
    return "\n".join(lines)


def figures(rounds: list[Round], a: Round, b: Round, n: int, batch: bool) -> list[Figure]:
    out: list[Figure] = []
    groups = [("concurrent", "gateway, POST /v1/jobs, best of 32/64 clients")]  # name prefixes
    if batch:
        groups.insert(0, ("batch", "gateway, POST /v1/jobs/batch, best size"))
    for key, label in groups:
        tried = [r for r in rounds if r.name.startswith(f"gateway {key}")]
        best = max(tried, key=lambda r: r.rate)
        for base, target in ((a, 2.0), (b, 0.7)):
            out.append(
                Figure(
                    BENCH,
                    f"{label} vs {base.name[:3]}",
                    best.rate,
                    "jobs/s",
                    baseline=base.rate,
                    baseline_name=base.name,
                    target=f">= {target:g}x",
                    met=best.rate >= target * base.rate,
                    note=f"{n} jobs; best: {best.name}",
                )
            )
    if not batch:
        out.append(
            Figure(BENCH, "gateway, POST /v1/jobs/batch", 0.0, "jobs/s", target=">= 2x", met=False,
                   note="the gateway does not serve POST /v1/jobs/batch")
        )  # fmt: skip
    for r in rounds:
        out.append(
            Figure(
                BENCH,
                f"reference: {r.name}",
                r.rate,
                "jobs/s",
                note=f"{r.seconds:.2f} s"
                + (
                    f"; {r.commands / r.jobs:.2f} SSH commands per job at {CENTER} (poller too)"
                    if r.commands is not None
                    else ""
                ),
            )
        )
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, nearest rank (with 50 samples, p99 is the largest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.submit_throughput", run, argv)


if __name__ == "__main__":
    sys.exit(main())
