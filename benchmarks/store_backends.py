"""Benchmark 6, store backends: reads and submissions on SQLite against PostgreSQL.

Run alone from the repository root (as root, like the testbed)::

    .venv/bin/python -m benchmarks.store_backends [--quick] [--keep-temp]

or with the others through `python -m benchmarks` (benchmarks/README.md). Three
set-ups, one after the other in one run, each on an empty store:

- (a) SQLite, one gateway (the embedded default);
- (b) PostgreSQL, one replica, on a fresh database of the testbed's server;
- (c) PostgreSQL, two replicas on one fresh database behind the testbed's HAProxy.

On each: 200 held jobs at centera (`--quick`: 40) through `POST /v1/jobs` from 32
client tasks (jobs/s), then `GET /v1/jobs/{id}` rotating over those jobs and
`GET /v1/jobs?limit=100` (a page of 100 records), each under wrk at 100 connections
(req/s). (b) and (c) are judged against (a) of the same run. Where the time goes:
the CPU seconds of the gateway processes, of the PostgreSQL server's processes (its
backends for this database and its own processes, from /proc), of HAProxy and of
the harness during each phase, per operation and as shares of the machine's CPU time.
Every process started is stopped, every job cancelled at the center and every
database dropped at the end, also on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp

from benchmarks.api_reads import LUA, Files, ensure_nofile, own_jobs, wrk
from benchmarks.files_throughput import machine_cpu, own_cpu
from benchmarks.harness import (
    REPO,
    START_TIMEOUT,
    VENV_BIN,
    BenchError,
    Context,
    Figure,
    Gateway,
    bench_config,
    bench_main,
    child_ticks,
    cpu_seconds,
    target_of,
)
from benchmarks.submit_throughput import (
    CENTER,
    USER,
    Created,
    Login,
    gateway_concurrent,
    held_spec,
    session,
)
from tests.testbed import TestbedError, postgres
from tests.testbed.centers import PLAIN_CENTER_IDS
from tests.testbed.haproxy import HAProxy
from tests.testbed.procs import cmdline

BENCH = "6 store backends"
JOBS, QUICK_JOBS = 200, 40  # --quick: the page read then has 40 records, not 100
TASKS = 32  # concurrent submitting clients
CONNECTIONS = 100  # wrk's
WARMUP, MEASURE = 2.0, 10.0
QUICK_WARMUP, QUICK_MEASURE = 1.0, 1.0  # wrk runs whole seconds, 1 s at least
PG_SAMPLE = 0.2  # s between two readings of the PostgreSQL server's processes
HAPROXY_UP = 30.0  # s for HAProxy to see both replicas UP
ATTEMPTS = 3  # per set-up, when the shared testbed was stopped meanwhile
TESTBED_BACK = 180.0  # s for the testbed to be up again
PG_BACK = 60.0  # s for the shared PostgreSQL to serve again (another user stopped it)
#: (key, name) of the set-ups, in the order they run; (a) is the baseline.
SETUPS = (
    ("a", "SQLite, 1 gateway"),
    ("b", "PostgreSQL, 1 replica"),
    ("c", "PostgreSQL, 2 replicas + HAProxy"),
)
#: (key, figure name, unit) of the phases, in the order they run on each set-up.
PHASES = (
    ("submit", f"POST /v1/jobs, {TASKS} clients", "jobs/s"),
    ("job", f"GET /v1/jobs/{{id}}, {CONNECTIONS} connections", "req/s"),
    ("list", f"GET /v1/jobs?limit=100, {CONNECTIONS} connections", "req/s"),
)
#: The server's own processes (not a client's backend), by their ps title.
PG_SERVER_PROCESSES = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
    "archiver",
    "stats collector",
    "startup",
    "io worker",
    "walsummarizer",
)


# ------------------------------------------------------------ where the time goes


class PgCpu:
    """CPU seconds of the PostgreSQL server's processes while it runs (a thread reads
    the postmaster's children every PG_SAMPLE s, so a backend that exits meanwhile
    keeps what it used up to its last reading), by kind: `database` (backends and
    autovacuum workers of this database), `server` (the postmaster and its own
    processes: WAL writer, checkpointer ...) and `others` (backends of other
    databases: other users of the testbed's server)."""

    def __init__(self, postmaster: int, database: str) -> None:
        self.postmaster = postmaster
        self.database = database
        self._tick = os.sysconf("SC_CLK_TCK")
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._kinds: dict[int, str] = {}
        self._own0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _kind(self, pid: int) -> str:
        title = cmdline(pid).removeprefix("postgres: ")
        words = title.split()
        if title.startswith("autovacuum worker"):
            return "database" if self.database in words else "others"
        if title.startswith(PG_SERVER_PROCESSES):
            return "server"
        # A client's backend: "<user> <database> <host>(<port>) <state>".
        return "database" if len(words) > 1 and words[1] == self.database else "others"

    def _read(self) -> None:
        for pid, ticks in child_ticks(self.postmaster).items():
            if pid not in self._kinds:
                self._kinds[pid] = self._kind(pid)
            self._last[pid] = ticks

    def _run(self) -> None:
        while not self._stop.wait(PG_SAMPLE):
            self._read()

    def start(self) -> None:
        self._read()
        self._first = dict(self._last)
        self._own0 = cpu_seconds(self.postmaster)[0]
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(timeout=10)
        self._read()
        out = {"database": 0.0, "server": cpu_seconds(self.postmaster)[0] - self._own0}
        out["others"] = 0.0
        for pid, last in self._last.items():
            out[self._kinds[pid]] += (last - self._first.get(pid, 0)) / self._tick
        return out


@dataclass
class Usage:
    """CPU seconds used during one phase, and its wall time."""

    wall: float = 0.0
    gateways: list[float] = field(default_factory=list)  # each gateway process (+ children)
    pg: dict[str, float] = field(default_factory=dict)  # PgCpu's kinds
    proxy: float = 0.0  # HAProxy (its processes)
    harness: float = 0.0  # this process and its children: the client, wrk, the meter
    busy: float = 0.0  # the whole machine

    @property
    def gateway(self) -> float:
        return sum(self.gateways)

    @property
    def postgres(self) -> float:
        """The server's CPU for this set-up: this database's backends and its own."""
        return self.pg.get("database", 0.0) + self.pg.get("server", 0.0)

    @property
    def other(self) -> float:
        """Busy time of the rest of the machine: the centers (sshd, Slurm), other users."""
        mine = self.gateway + self.postgres + self.proxy + self.harness
        return max(0.0, self.busy - mine - self.pg.get("others", 0.0))


@dataclass
class Setup:
    """What one set-up serves: the URL its clients use, the processes to meter."""

    key: str
    name: str
    url: str
    gateways: list[Gateway]
    proxy_pids: list[int] = field(default_factory=list)
    postmaster: int | None = None
    database: str | None = None

    @contextlib.contextmanager
    def meter(self) -> Iterator[Usage]:
        """The CPU seconds of each part while the block runs (filled in on exit)."""
        usage = Usage()

        def gateways() -> list[float]:
            return [sum(cpu_seconds(g.pid)) for g in self.gateways]

        def proxy() -> float:
            return sum(sum(cpu_seconds(p)) for p in self.proxy_pids)

        pg = None
        if self.postmaster is not None and self.database is not None:
            pg = PgCpu(self.postmaster, self.database)
            pg.start()
        g0, p0, h0, b0 = gateways(), proxy(), sum(own_cpu()), machine_cpu()[0]
        start = time.perf_counter()
        try:
            yield usage
        finally:
            usage.wall = time.perf_counter() - start
            try:
                usage.pg = pg.stop() if pg is not None else {}
                usage.gateways = [b - a for a, b in zip(g0, gateways(), strict=True)]
                usage.proxy = proxy() - p0
            except OSError as exc:  # /proc/<pid> is gone
                raise BenchError(
                    f"a process of {self.name} exited during the phase: {exc}"
                ) from None
            usage.harness = sum(own_cpu()) - h0
            usage.busy = machine_cpu()[0] - b0


@dataclass
class Phase:
    setup: Setup
    key: str  # PHASES' key
    ops: int
    rate: float  # ops per second
    usage: Usage
    detail: str  # counts and latencies, for the note


# ------------------------------------------------------------ the phases


async def submissions(
    setup: Setup, http: aiohttp.ClientSession, n: int, created: Created, ctx: Context
) -> Phase:
    spec = held_spec(ctx.tb, CENTER)
    try:
        with setup.meter() as usage:
            seconds = await gateway_concurrent(http, setup.url, spec, n, TASKS, created)
    except* BenchError as failed:  # the first client's error, not the task group's
        raise failed.exceptions[0] from None
    await created.check_queued(CENTER, n)
    detail = f"{n} held jobs at {CENTER} in {seconds:.2f} s, each 201 with its native id"
    return Phase(setup, "submit", n, n / seconds, usage, detail)


async def reads(setup: Setup, files: Files, mode: str, ctx: Context) -> Phase:
    warmup, seconds = (QUICK_WARMUP, QUICK_MEASURE) if ctx.quick else (WARMUP, MEASURE)
    await wrk(setup.url, files, mode, CONNECTIONS, warmup)
    with setup.meter() as usage:
        load = await wrk(setup.url, files, mode, CONNECTIONS, seconds)
    detail = (
        f"{load.requests} requests in {load.seconds:.1f} s, all 200; p50 {load.p50_ms:.1f} ms, "
        f"p99 {load.p99_ms:.1f} ms, max {load.max_ms:.0f} ms"
    )
    return Phase(setup, mode, load.requests, load.rate, usage, detail)


async def measure(ctx: Context, setup: Setup) -> list[Phase]:
    """The three phases on one set-up; its jobs cancelled at the center afterwards."""
    n = QUICK_JOBS if ctx.quick else JOBS
    login = Login.of(ctx.tb, CENTER)
    created = Created({CENTER: login})
    work = ctx.work / f"store-{setup.key}-load"
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    token = await asyncio.to_thread(setup.gateways[0].issue_token, USER, "researcher")
    ensure_nofile([os.getpid(), *(g.pid for g in setup.gateways)], CONNECTIONS + 256)
    phases: list[Phase] = []
    async with session(token) as http:
        try:
            phases.append(await submissions(setup, http, n, created, ctx))
            files = Files(work / "reads.lua", work / "ids.txt", work / "token.txt", work / "-")
            files.script.write_text(LUA, encoding="utf-8")
            ids = sorted(created.gateway.get(CENTER, ()))
            files.ids.write_text("\n".join(ids) + "\n", encoding="ascii")
            files.token.write_text(token + "\n", encoding="ascii")
            files.token.chmod(0o600)
            for mode in ("job", "list"):
                phases.append(await reads(setup, files, mode, ctx))
        finally:
            if setup.database is not None:
                # The testbed's server is shared: another user's outage test may be on.
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(postgres.wait_serving, ctx.tb.base, PG_BACK)
            # Whatever the store holds with a native id is cancelled too (an answer the
            # client did not read), then every job of the set-up at the center.
            with contextlib.suppress(Exception):
                for job in await own_jobs(http, setup.url):
                    if job.get("native_id") and job.get("center") == CENTER:
                        created.add(CENTER, str(job["native_id"]), job["id"])
            await created.cleanup()
    for p in phases:
        print(f"  {BENCH}: {setup.name}: {p.key}: {p.rate:,.1f}/s", file=sys.stderr, flush=True)
    return phases


# ------------------------------------------------------------ the set-ups


def _label(label: str, attempt: int) -> str:
    """A work dir (gateway label) per attempt: each attempt starts afresh."""
    return label if attempt == 1 else f"{label}-{attempt}"


def _port(gw: Gateway) -> int:
    port = urllib.parse.urlsplit(gw.url).port
    assert port is not None
    return port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def database(ctx: Context, key: str) -> AsyncIterator[tuple[str, str]]:
    """A fresh database of the testbed's server: (name, dsn); dropped on the way out."""
    name = f"bench_store_{key}_{secrets.token_hex(4)}"
    dsn = await asyncio.to_thread(postgres.create_database, ctx.tb.base, name)
    try:
        await prepare(ctx, key, dsn)
        yield name, dsn
    finally:
        await asyncio.to_thread(postgres.drop_database, ctx.tb.base, name)


def _pg_env(ctx: Context) -> dict[str, str]:
    return {"PGPASSFILE": str(postgres.pgpass_file(ctx.tb.base))}


def _pg_settings(ctx: Context, dsn: str) -> dict[str, object]:
    return {"extra_env": _pg_env(ctx), "store": {"kind": "postgres", "dsn": dsn}}


async def prepare(ctx: Context, key: str, dsn: str) -> None:
    """What an operator does before the first replica starts (docs/deployment.md): the
    schema through `hpcfed db migrate`, and alice's SSH key for each center into the
    vault, whose entries live in the database, through `hpcfed vault add-key`."""
    work = ctx.work / f"store-{key}-prepare-{secrets.token_hex(3)}"
    await asyncio.to_thread(work.mkdir, parents=True)
    config = bench_config(ctx.tb, work, store={"kind": "postgres", "dsn": dsn})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCFED_")}
    env.update(_pg_env(ctx), HPCFED_DATA_DIR=str(work / "data"))
    commands = [["db", "migrate"]]
    for center in PLAIN_CENTER_IDS:
        target = target_of(ctx.tb, center, USER)
        key_file = str(target.key)
        commands.append(["vault", "add-key", "--center", center, "--login", target.login])
        commands[-1] += ["--key-file", key_file]
    for command in commands:
        argv = [str(VENV_BIN / "hpcfed"), *command[:2], "--config", str(config), *command[2:]]
        done = await asyncio.to_thread(
            subprocess.run,
            argv,
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise BenchError(
                f"hpcfed {' '.join(command[:2])} failed ({done.returncode}): {done.stderr[-1000:]}"
            )


def _postmaster(ctx: Context) -> int:
    pid = postgres.pid(ctx.tb.base)
    if pid is None:
        raise BenchError("the testbed's PostgreSQL does not run")
    return pid


async def sqlite_setup(ctx: Context, attempt: int) -> list[Phase]:
    with ctx.gateway(_label("store-sqlite", attempt)) as gw:
        return await measure(ctx, Setup("a", SETUPS[0][1], gw.url, [gw]))


async def postgres_setup(ctx: Context, attempt: int) -> list[Phase]:
    async with database(ctx, "b") as (name, dsn):
        with ctx.gateway(_label("store-pg1", attempt), **_pg_settings(ctx, dsn)) as gw:
            setup = Setup("b", SETUPS[1][1], gw.url, [gw], [], _postmaster(ctx), name)
            return await measure(ctx, setup)


async def replicas_setup(ctx: Context, attempt: int) -> list[Phase]:
    async with database(ctx, "c") as (name, dsn):
        with contextlib.ExitStack() as stack:
            # One after the other: the first applies the schema's migrations.
            gateways = [
                stack.enter_context(
                    ctx.gateway(_label(f"store-pg2-r{i}", attempt), **_pg_settings(ctx, dsn))
                )
                for i in range(2)
            ]
            proxy = HAProxy(
                ctx.work / _label("store-haproxy", attempt),
                "hpcfed",
                _free_port(),
                {f"replica{i}": _port(g) for i, g in enumerate(gateways)},
            )
            proxy.start()
            stack.callback(proxy.stop)
            for i in range(len(gateways)):
                await asyncio.to_thread(proxy.wait_state, f"replica{i}", "UP", HAPROXY_UP)
            if proxy.pid is None:
                raise BenchError(f"HAProxy exited (its log: {proxy.log_file})")
            setup = Setup("c", SETUPS[2][1], proxy.url, gateways, [proxy.pid])
            setup.postmaster, setup.database = _postmaster(ctx), name
            return await measure(ctx, setup)


# ------------------------------------------------------------ figures


def where(p: Phase, nproc: int) -> str:
    """One phase's CPU: per operation and as shares of the machine's CPU time."""
    u = p.usage
    per_op = [("gateway", u.gateway), ("postgres", u.postgres), ("haproxy", u.proxy)]
    per_op += [("harness", u.harness)]
    ms = ", ".join(f"{k} {1000 * v / p.ops:.2f}" for k, v in per_op if v or k != "haproxy")
    capacity = u.wall * nproc
    shares = [("gateway", u.gateway), ("postgres", u.postgres), ("haproxy", u.proxy)]
    shares += [("harness", u.harness), ("other PG dbs", u.pg.get("others", 0.0))]
    shares += [("rest", u.other), ("idle", max(0.0, capacity - u.busy))]
    pct = ", ".join(f"{k} {100 * v / capacity:.0f}%" for k, v in shares if v or k == "idle")
    busy = " + ".join(f"{100 * g / u.wall:.0f}%" for g in u.gateways)
    line = f"CPU ms/op: {ms}; of {nproc} CPUs x {u.wall:.1f} s: {pct}; gateway busy {busy}"
    if u.pg:
        line += (
            f" of a CPU; postgres: this database {u.pg['database']:.2f} s, the server's own "
            f"{u.pg['server']:.2f} s"
        )
    else:
        line += " of a CPU"
    return line


def figures(phases: list[Phase]) -> list[Figure]:
    base = {p.key: p for p in phases if p.setup.key == "a"}
    out = []
    for p in phases:
        name, unit = next((name, unit) for k, name, unit in PHASES if k == p.key)
        ref = base.get(p.key) if p.setup.key != "a" else None
        out.append(
            Figure(
                BENCH,
                f"{p.setup.name}: {name}",
                p.rate,
                unit,
                baseline=ref.rate if ref else None,
                baseline_name=SETUPS[0][1] if ref else "",
                note=p.detail,
            )
        )
    return out


def notes(phases: list[Phase], nproc: int) -> str:
    lines = [
        "Benchmark 6, where the time goes (CPU seconds during each measured phase, from "
        "/proc; postgres = this database's backends + the server's own processes; harness = "
        "this process and wrk; rest = the centers and anything else on the machine):"
    ]
    for p in phases:
        name = next(name for k, name, _ in PHASES if k == p.key)
        lines.append(f"    {p.setup.name}, {name}: {p.rate:,.1f}/s; {p.detail}")
        lines.append(f"      {where(p, nproc)}")
    return "\n".join(lines)


# ------------------------------------------------------------ run


async def run(ctx: Context) -> list[Figure]:
    """Benchmark 6: the three set-ups in order, each on an empty store; its figures."""
    phases: list[Phase] = []
    retried: list[str] = []
    for (key, name), one in zip(
        SETUPS, (sqlite_setup, postgres_setup, replicas_setup), strict=True
    ):
        for attempt in range(1, ATTEMPTS + 1):
            marks = await asyncio.to_thread(_marks, ctx)
            try:
                phases += await one(ctx, attempt)
                break
            except (BenchError, TestbedError) as exc:
                # The testbed (its centers, its PostgreSQL) is shared: another user may
                # stop and start it meanwhile. The set-up runs again once it is back.
                if attempt == ATTEMPTS or not await _was_restarted(ctx, marks):
                    raise
                retried.append(f"({key}) {name}: {str(exc).splitlines()[0][:200]}")
                print(f"  {BENCH}: {name}: {exc}; once more", file=sys.stderr, flush=True)
    ctx.notes.append(notes(phases, len(os.sched_getaffinity(0))))
    if retried:
        ctx.notes.append(
            "Benchmark 6, set-ups run again after the shared testbed was stopped meanwhile: "
            + "; ".join(retried)
        )
    return figures(phases)


def _marks(ctx: Context) -> tuple[int | None, ...]:
    """The pids of the testbed's PostgreSQL and of centera's sshd and slurmctld: they
    change when another user of the testbed stops and starts it."""
    tb = ctx.tb
    return (postgres.pid(tb.base), *(tb.daemon_pid(CENTER, d) for d in ("sshd", "slurmctld")))


async def _was_restarted(ctx: Context, before: tuple[int | None, ...]) -> bool:
    """Whether the testbed was stopped since `before` was taken: then wait (bounded)
    until it serves again, and True."""

    def up() -> bool:
        return ctx.tb.is_up() and postgres.serving(ctx.tb.base)

    if await asyncio.to_thread(_marks, ctx) == before and await asyncio.to_thread(up):
        return False
    deadline = time.monotonic() + TESTBED_BACK
    while not await asyncio.to_thread(up):
        if time.monotonic() > deadline:
            raise BenchError(f"the testbed is not back after {TESTBED_BACK:g} s")
        await asyncio.sleep(1.0)
    return True


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.store_backends", run, argv)


if __name__ == "__main__":
    sys.exit(main())
