"""Benchmark 3, API reads: `GET /v1/jobs/{id}` and `GET /v1/jobs?limit=100` under load.

Run alone from the repository root (as root, like the testbed)::

    .venv/bin/python -m benchmarks.api_reads [--quick] [--profile DIR] [--keep]

or with the others through `python -m benchmarks` (benchmarks/README.md). One run
starts a real gateway, creates held jobs at centera as alice (they stay queued), reads
their records back, and starts a bare aiohttp server (benchmarks/bare_server.py) that
serves the same documents with no auth and no store. `wrk` (one thread, in its own
process, on loopback) then loads each route at 100 and 500 connections, a warm-up
then a measured run, first the gateway then the bare server. A Lua script rotates
through the job ids, counts responses that are not 200, stops its thread after a
bounded number of responses and prints throughput and latency percentiles as JSON.
Any non-200 answer or socket error makes the run invalid. The jobs are cancelled at
the end, also on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bare_server import BareServer
from benchmarks.harness import (
    BenchError,
    Context,
    Figure,
    Gateway,
    bench_main,
    py_spy,
)
from tests.testbed import Testbed

BENCH = "3 API reads"
CENTER = "centera"
USER = "alice"
JOBS, QUICK_JOBS = 200, 20
WARMUP, MEASURE = 2.0, 10.0
QUICK_WARMUP, QUICK_MEASURE = 1.0, 1.0  # wrk runs whole seconds, 1 s at least
PROFILE_SECONDS = 8.0
CLIENTS = (100, 500)
#: (figure name, mode given to the Lua script)
ROUTES = (("GET /v1/jobs/{id}", "job"), ("GET /v1/jobs?limit=100", "list"))
JOB_SPEC = {"center": CENTER, "command": "true", "extra_directives": {"slurm": ["--hold"]}}
SETUP_CONCURRENCY = 8
REQUEST_TIMEOUT = 60.0  # one set-up or clean-up request
WRK = "/usr/bin/wrk"
WRK_TIMEOUT = "30s"  # a request unanswered this long is a socket error (invalid run)
#: Each wrk thread stops after this many responses per second of -d, far above what
#: either server answers here: the count bounds the run, the time ends it. wrk's
#: duration stays -d when a thread stops early, so a run that hit the count is refused.
MAX_RATE = 50_000
THROUGHPUT_TARGET = 2_000.0  # req/s, single-job reads at 100 clients
P99_TARGET_MS = 50.0
FIRECREST_NOTE = (
    "3 API reads: for orientation, FirecREST v2 publishes ~195 req/s at 500 clients with "
    "~900 ms latency (published figure, not measured here)."
)

LUA = r"""
-- wrk script of benchmarks/api_reads.py.
-- args: ids file, token file, mode ("job" or "list"), responses per thread at most
local threads = {}
local requests = {}
local next_index = 1
local max_responses = 0
responses = 0
non200 = 0
first_status = 0
stopped = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[2], "r"))
  local token = f:read("*l")
  f:close()
  local headers = { Authorization = "Bearer " .. token }
  if args[3] == "list" then
    requests[1] = wrk.format("GET", "/v1/jobs?limit=100", headers)
  else
    for id in io.lines(args[1]) do
      if id ~= "" then
        requests[#requests + 1] = wrk.format("GET", "/v1/jobs/" .. id, headers)
      end
    end
  end
  max_responses = tonumber(args[4])
end

function request()
  local r = requests[next_index]
  next_index = next_index % #requests + 1
  return r
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
    if first_status == 0 then first_status = status end
  end
  if responses >= max_responses and stopped == 0 then
    stopped = 1
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local seen, bad, first, stops = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    seen = seen + t:get("responses")
    stops = stops + t:get("stopped")
    bad = bad + t:get("non200")
    if first == 0 then first = t:get("first_status") end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "responses": %d, ' ..
    '"non200": %d, "first_status": %d, "stopped": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, ' ..
    '"max_us": %.0f, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, seen, bad, first, stops,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


@dataclass
class Load:
    """What one measured wrk run reported."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass
class Files:
    """The wrk script and its inputs, in the benchmark's work dir."""

    script: Path
    ids: Path
    token: Path
    bare_doc: Path


# ------------------------------------------------------------ wrk


def ensure_nofile(pids: list[int], need: int) -> None:
    """Raise each process's soft RLIMIT_NOFILE to `need` (within its hard limit)."""
    for pid in pids:
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < need:
            if hard != resource.RLIM_INFINITY and hard < need:
                raise BenchError(f"pid {pid}: open files limited to {hard}, {need} needed")
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (need, hard))


async def wrk(url: str, files: Files, mode: str, clients: int, seconds: float) -> Load:
    """One `wrk -t1` run; raises if any answer was not 200 or any socket error occurred."""
    duration = max(1, round(seconds))
    argv = [
        WRK, "-t1", "-c", str(clients), "-d", f"{duration}s", "--timeout", WRK_TIMEOUT,
        "-s", str(files.script), url + "/",
        "--", str(files.ids), str(files.token), mode, str(MAX_RATE * duration),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration + 30.0)
    except TimeoutError:
        raise BenchError(f"wrk: no end after {duration + 30:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')}{text}")
    r = json.loads(line.removeprefix("WRK_JSON "))
    what = f"{mode} at {clients} connections on {url}"
    if r["non200"]:
        raise BenchError(
            f"{what}: {r['non200']} of {r['responses']} answers not 200 "
            f"(first: {r['first_status']})"
        )
    errors = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    if errors:
        raise BenchError(f"{what}: socket errors {errors}")
    if r["stopped"]:
        raise BenchError(f"{what}: reached {MAX_RATE}/s x {duration} s answers; raise MAX_RATE")
    if not r["requests"] or not r["duration_us"]:
        raise BenchError(f"{what}: no answer at all")
    return Load(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
    )


async def measure(
    url: str, files: Files, mode: str, clients: int, warmup: float, seconds: float
) -> Load:
    await wrk(url, files, mode, clients, warmup)
    return await wrk(url, files, mode, clients, seconds)


# ------------------------------------------------------------ the jobs


async def _request(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with session.request(method, url, timeout=timeout, **kw) as resp:
        body = await resp.read()
        data = json.loads(body) if body and resp.content_type == "application/json" else None
        return resp.status, data


async def create_jobs(session: aiohttp.ClientSession, url: str, n: int) -> list[dict[str, Any]]:
    """`n` held jobs at the center; their records as the submission answered."""
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one() -> dict[str, Any]:
        async with sem:
            status, record = await _request(session, "POST", f"{url}/v1/jobs", json=JOB_SPEC)
        if status not in (201, 202):
            raise BenchError(f"POST /v1/jobs: HTTP {status}: {record}")
        assert isinstance(record, dict)
        return record

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
        # Whatever did get created is cancelled by the caller from the gateway's list.
        await asyncio.gather(*tasks, return_exceptions=True)


async def own_jobs(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    """Every job of this gateway's store visible to the token (a fresh store: ours)."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        status, page = await _request(session, "GET", f"{url}/v1/jobs", params=params)
        if status != 200:
            raise BenchError(f"GET /v1/jobs: HTTP {status}: {page}")
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return jobs


async def _at_center(tb: Testbed, command: str) -> subprocess.CompletedProcess[str]:
    argv = tb.ssh_command(CENTER, command, user=USER)
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        capture_output=True,
        text=True,
        timeout=REQUEST_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


async def cancel_jobs(session: aiohttp.ClientSession, tb: Testbed, url: str) -> None:
    """DELETE each job of this gateway that is not over, then ask the center which of
    their Slurm ids are still queued and `scancel` those by id (never `scancel -u`:
    others may have jobs there as alice meanwhile)."""
    try:
        jobs = await own_jobs(session, url)
    except (aiohttp.ClientError, TimeoutError, BenchError) as exc:
        print(f"  api reads: cannot list the jobs to cancel them: {exc}", file=sys.stderr)
        return
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(job: dict[str, Any]) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with sem:
                await _request(session, "DELETE", f"{url}/v1/jobs/{job['id']}")

    await asyncio.gather(*(one(j) for j in jobs if not j.get("terminal")))
    native = sorted({str(j["native_id"]) for j in jobs if j.get("native_id")})
    if not native:
        return
    try:
        listed = await _at_center(
            tb, f"squeue -h -t PENDING,RUNNING,SUSPENDED -o %i -j {','.join(native)}"
        )
        # squeue refuses the list if an id is already purged: then cancel them all.
        left = listed.stdout.split() if listed.returncode == 0 else native
        if left:
            done = await _at_center(tb, "scancel " + " ".join(left))
            if listed.returncode == 0 and done.returncode != 0:
                print(f"  api reads: scancel {left}: {done.stderr}", file=sys.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  api reads: cannot check the jobs at {CENTER}: {exc}", file=sys.stderr)


async def read_documents(
    session: aiohttp.ClientSession, url: str, ids: list[str]
) -> dict[str, Any]:
    """The gateway's answers to both routes, for the bare server to serve."""
    sem = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(job_id: str) -> tuple[str, Any]:
        async with sem:
            status, record = await _request(session, "GET", f"{url}/v1/jobs/{job_id}")
        if status != 200:
            raise BenchError(f"GET /v1/jobs/{job_id}: HTTP {status}: {record}")
        return job_id, record

    records = dict(await asyncio.gather(*(one(i) for i in ids)))
    status, page = await _request(session, "GET", f"{url}/v1/jobs", params={"limit": "100"})
    if status != 200:
        raise BenchError(f"GET /v1/jobs?limit=100: HTTP {status}: {page}")
    return {"jobs": records, "list": page}


# ------------------------------------------------------------ profile


async def profile(gw: Gateway, files: Files, out_dir: Path) -> str:
    """An unmeasured single-job run at 100 connections with py-spy on the gateway."""
    raw = out_dir / "reads.txt"
    summary = await py_spy(
        gw.pid, raw, lambda: wrk(gw.url, files, "job", CLIENTS[0], PROFILE_SECONDS), idle=False
    )
    if summary is None:
        return "py-spy not installed; no profile"
    return (
        f"3 API reads: py-spy of the gateway, GET /v1/jobs/{{id}} at {CLIENTS[0]} "
        f"connections for {PROFILE_SECONDS:g} s (raw stacks: {raw}):\n" + summary
    )


# ------------------------------------------------------------ figures


def figures_of(route: str, clients: int, gw: Load, bare: Load) -> list[Figure]:
    judged = route == ROUTES[0][0] and clients == CLIENTS[0]
    base = f"{route}, {clients} clients"
    counted = (
        f"{gw.requests} requests in {gw.seconds:.1f} s (bare {bare.requests}), all 200, "
        "no socket error"
    )
    spread = (
        f"p50 {gw.p50_ms:.2f} ms (bare {bare.p50_ms:.2f}), "
        f"max {gw.max_ms:.0f} ms (bare {bare.max_ms:.0f})"
    )
    rate_ok = gw.rate >= THROUGHPUT_TARGET
    p99_ok = gw.p99_ms < P99_TARGET_MS
    return [
        Figure(
            bench=BENCH,
            name=f"{base}: throughput",
            value=gw.rate,
            unit="req/s",
            baseline=bare.rate,
            baseline_name="bare aiohttp",
            target=f">= {THROUGHPUT_TARGET:,.0f} req/s" if judged else "",
            met=rate_ok if judged else None,
            note=counted,
        ),
        Figure(
            bench=BENCH,
            name=f"{base}: p99 latency",
            value=gw.p99_ms,
            unit="ms",
            baseline=bare.p99_ms,
            baseline_name="bare aiohttp",
            target=f"< {P99_TARGET_MS:g} ms" if judged else "",
            met=p99_ok if judged else None,
            note=spread,
        ),
    ]


# ------------------------------------------------------------ run


async def _measure_all(ctx: Context, gw: Gateway, session: aiohttp.ClientSession) -> list[Figure]:
    n_jobs = QUICK_JOBS if ctx.quick else JOBS
    warmup, seconds = (QUICK_WARMUP, QUICK_MEASURE) if ctx.quick else (WARMUP, MEASURE)
    work = ctx.work / "reads-load"
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)

    t0 = time.monotonic()
    records = await create_jobs(session, gw.url, n_jobs)
    ids = [r["id"] for r in records]
    doc = await read_documents(session, gw.url, ids)
    print(
        f"  api reads: {len(ids)} held jobs at {CENTER} in {time.monotonic() - t0:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    files = Files(work / "reads.lua", work / "ids.txt", work / "token.txt", work / "bare.json")
    files.script.write_text(LUA, encoding="utf-8")
    files.ids.write_text("\n".join(ids) + "\n", encoding="ascii")
    token = session.headers["Authorization"].removeprefix("Bearer ")
    files.token.write_text(token + "\n", encoding="ascii")
    files.token.chmod(0o600)
    files.bare_doc.write_text(json.dumps(doc), encoding="utf-8")

    figures: list[Figure] = []
    with BareServer(files.bare_doc, work / "bare.log") as bare:
        need = max(CLIENTS) + 256
        ensure_nofile([os.getpid(), gw.pid, bare.pid], need)
        for route, mode in ROUTES:
            for clients in CLIENTS:
                g = await measure(gw.url, files, mode, clients, warmup, seconds)
                b = await measure(bare.url, files, mode, clients, warmup, seconds)
                print(
                    f"  api reads: {route} at {clients}: gateway {g.rate:,.0f} req/s "
                    f"p99 {g.p99_ms:.1f} ms; bare {b.rate:,.0f} req/s p99 {b.p99_ms:.1f} ms",
                    file=sys.stderr,
                    flush=True,
                )
                figures += figures_of(route, clients, g, b)
    if ctx.profile_dir is not None:
        ctx.notes.append(await profile(gw, files, ctx.profile_dir))
    ctx.notes.append(FIRECREST_NOTE)
    return figures


async def run(ctx: Context) -> list[Figure]:
    """Benchmark 3 on one gateway; its figures. Raises BenchError if a run is invalid."""
    with ctx.gateway("reads") as gw:
        token = await asyncio.to_thread(gw.issue_token, USER, "researcher")
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            try:
                return await _measure_all(ctx, gw, session)
            except BenchError:
                print(gw.log_tail(5), file=sys.stderr)
                raise
            finally:
                # Also when cancelled (Ctrl-C): the held jobs do not outlive the run.
                await cancel_jobs(session, ctx.tb, gw.url)


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.api_reads", run, argv)


if __name__ == "__main__":
    sys.exit(main())
