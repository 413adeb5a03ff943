"""Benchmark 2: status at scale: what tracking 2,000 jobs costs the centers and the gateway.

Run from the repository root (as root, like the testbed)::

    .venv/bin/python -m benchmarks.status_scale [--quick]

2,000 held jobs (`--quick`: 150), a third each at centera, centerb (Slurm) and centerc
(PBS, Torque dialect), go through `POST /v1/jobs/batch` of one gateway polling every
2 s. Then, with no request but /metrics scrapes, over >= 5 poll ticks (`--quick`: 2):
SSH commands per tick per center (`hpcfed_ssh_commands_total` over
`hpcfed_poll_duration_seconds_count`, per center) and each tick's wall time (the
histogram's sum and count read at every tick), beside one raw `squeue` over a reused
ssh connection. Then the gateway's memory with 10,000 job records (`--quick`: 1,000):
COMPLETED records made from the stored ones are added to a copy of its store, a
gateway started on it polls the live jobs 3 times and serves every record through
`GET /v1/jobs?limit=1000`; its VmHWM is judged beside a gateway with an empty store.
Every job is cancelled and its job directory removed at the end, also on errors.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from adapters.base import JobState
from benchmarks.harness import (
    MIB,
    BenchError,
    Context,
    Figure,
    Gateway,
    bench_main,
    proc_status,
    scrape,
)
from benchmarks.submit_throughput import (
    BATCH_MAX,
    USER,
    Created,
    Login,
    control_master,
    has_batch_endpoint,
    held_spec,
    median,
    request_json,
    run_argv,
    session,
    submit_batch,
    submit_one,
)
from gateway.jobs.records import JobRecord, JobUsage
from gateway.store.sqlite.jobs import SQLiteJobStore
from gateway.units import utcnow

BENCH = "2 status at scale"
CENTERS = ("centera", "centerb", "centerc")
POLL_INTERVAL = 2.0
COMMANDS_TARGET = 2.0  # per poll tick per center
RSS_TARGET_MIB = 200.0
RECORDS = 10_000  # job records for the memory figure (--quick: 1,000)
TICK_TIMEOUT = 60.0  # one poll tick showing up in /metrics
SCRAPE_EVERY = 0.25
STORE_FILE = "hpcfed.db"  # the store's default path under data_dir

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def total(samples: Samples, name: str, center: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and ("center", center) in ls)


class Metrics:
    """The gateway's /metrics, read as an operator."""

    def __init__(self, http: aiohttp.ClientSession, gw: Gateway) -> None:
        self.http = http
        self.url = f"{gw.url}/metrics"

    async def read(self) -> Samples:
        async with self.http.get(self.url) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise BenchError(f"GET /metrics: HTTP {resp.status}: {text[:300]}")
        return scrape(text)

    async def wait_ticks(self, n: int, centers: tuple[str, ...]) -> Samples:
        """Until every center's poll count grew by `n` (bounded); the last samples."""
        start = await self.read()
        want = {c: total(start, "hpcfed_poll_duration_seconds_count", c) + n for c in centers}
        deadline = time.monotonic() + TICK_TIMEOUT * n
        while True:
            now = await self.read()
            if all(total(now, "hpcfed_poll_duration_seconds_count", c) >= want[c] for c in centers):
                return now
            if time.monotonic() > deadline:
                raise BenchError(f"fewer than {n} poll ticks in {TICK_TIMEOUT * n:g} s")
            await asyncio.sleep(SCRAPE_EVERY)


async def submit_all(
    http: aiohttp.ClientSession, url: str, spec: dict[str, Any], n: int, c: Created
) -> tuple[float, str]:
    """n jobs of `spec` through the batch endpoint (up to 1000 per request, one
    request at a time), or from 16 clients of POST /v1/jobs if the gateway has no
    batch endpoint; (seconds, how)."""
    batch = await has_batch_endpoint(http, url)

    async def submit() -> None:
        if batch:
            for i in range(0, n, BATCH_MAX):
                await submit_batch(http, url, [spec] * min(BATCH_MAX, n - i), c)
            return
        left = n

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await submit_one(http, url, spec, c)

        async with asyncio.TaskGroup() as group:
            for _ in range(16):
                group.create_task(client())

    start = time.perf_counter()
    await submit()
    how = "POST /v1/jobs/batch" if batch else "POST /v1/jobs, 16 clients per center (no batch)"
    return time.perf_counter() - start, how


async def window(metrics: Metrics, ticks: int) -> dict[str, dict[str, Any]]:
    """Per center over >= `ticks` poll ticks: commands per tick and each tick's seconds."""
    first = await metrics.read()
    last_count = {c: total(first, "hpcfed_poll_duration_seconds_count", c) for c in CENTERS}
    last_sum = {c: total(first, "hpcfed_poll_duration_seconds_sum", c) for c in CENTERS}
    durations: dict[str, list[float]] = {c: [] for c in CENTERS}
    deadline = time.monotonic() + TICK_TIMEOUT * ticks
    while True:
        now = await metrics.read()
        for c in CENTERS:
            count = total(now, "hpcfed_poll_duration_seconds_count", c)
            if count > last_count[c]:  # one tick seen (or more, between two scrapes)
                seconds = total(now, "hpcfed_poll_duration_seconds_sum", c) - last_sum[c]
                durations[c] += [seconds / (count - last_count[c])] * int(count - last_count[c])
                last_count[c] = count
                last_sum[c] = total(now, "hpcfed_poll_duration_seconds_sum", c)
        if all(len(durations[c]) >= ticks for c in CENTERS):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"fewer than {ticks} poll ticks in {TICK_TIMEOUT * ticks:g} s")
        await asyncio.sleep(SCRAPE_EVERY)
    out: dict[str, dict[str, Any]] = {}
    for c in CENTERS:
        commands = total(now, "hpcfed_ssh_commands_total", c) - total(
            first, "hpcfed_ssh_commands_total", c
        )
        ticks_seen = total(now, "hpcfed_poll_duration_seconds_count", c) - total(
            first, "hpcfed_poll_duration_seconds_count", c
        )
        out[c] = {
            "commands": commands,
            "ticks": ticks_seen,
            "per_tick": commands / ticks_seen,
            "durations": durations[c],
        }
    return out


async def raw_squeue(login: Login, times: int) -> float:
    """Median seconds of `squeue -u <login> -h -o '%i %T'` over a reused ssh connection."""
    async with control_master(login.target) as ssh:
        command = [*ssh, f"squeue -u {login.target.login} -h -o '%i %T'"]
        seconds = []
        for _ in range(times):
            start = time.perf_counter()
            await run_argv(command, "raw squeue")
            seconds.append(time.perf_counter() - start)
    return median(seconds)


async def add_completed(db: Path, wanted: int) -> int:
    """Fill the store at `db` up to `wanted` job records with COMPLETED copies of the
    ones in it (new uuid4 ids, earlier times, a usage); how many were added."""
    store = SQLiteJobStore(db)
    await store.open()
    try:
        templates: list[JobRecord] = await store.active()
        if not templates:
            raise BenchError(f"{db}: no job records to copy")
        have = sum((await store.count_by_center_state()).values())
        now = utcnow()
        for i in range(wanted - have):
            t = templates[i % len(templates)]
            created = t.created_at - timedelta(days=1 + i % 30, seconds=i)
            started = created + timedelta(seconds=30)
            ended = started + timedelta(seconds=60 + i % 600)
            price = t.price
            usage = (
                JobUsage(
                    cores=1, gpus=0, started_at=started, ended_at=ended,
                    wall_seconds=(ended - started).total_seconds(),
                    core_hours=(ended - started).total_seconds() / 3600, price=price,
                    cost=(ended - started).total_seconds() / 3600 * price.core_hour,
                )
                if price is not None
                else None
            )  # fmt: skip
            record = t.model_copy(
                update={
                    "id": str(uuid.uuid4()),
                    "state": JobState.COMPLETED,
                    "native_id": str(900_000 + i),
                    "native_state": "COMPLETED",
                    "reason": None,
                    "exit_code": 0,
                    "idempotency_key": None,
                    "usage": usage,
                    "created_at": created,
                    "submitted_at": created,
                    "started_at": started,
                    "finished_at": ended,
                    "updated_at": min(ended, now),
                }
            )
            await store.insert(record)
        return wanted - have
    finally:
        await store.close()


async def page_all(http: aiohttp.ClientSession, url: str) -> int:
    """GET /v1/jobs?limit=1000 through every page; how many records were served."""
    seen: set[str] = set()
    cursor: str | None = None
    for _ in range(RECORDS // 1000 + 10):  # bounded: pages more than any run needs
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        status, body = await request_json(http, "GET", f"{url}/v1/jobs", params=params)
        if status != 200 or not isinstance(body, dict):
            raise BenchError(f"GET /v1/jobs: HTTP {status}: {str(body)[:300]}")
        seen.update(job["id"] for job in body["jobs"])
        cursor = body.get("next_cursor")
        if not cursor:
            return len(seen)
    raise BenchError("GET /v1/jobs: the cursor did not end")


async def run(ctx: Context) -> list[Figure]:
    n_total = 150 if ctx.quick else 2000
    ticks = 2 if ctx.quick else 5
    records = 1000 if ctx.quick else RECORDS
    per = {c: n_total // 3 + (1 if i < n_total % 3 else 0) for i, c in enumerate(CENTERS)}
    logins = {c: Login.of(ctx.tb, c) for c in CENTERS}
    created = Created(logins)
    specs = {c: held_spec(ctx.tb, c) for c in CENTERS}
    figs: list[Figure] = []
    try:
        with ctx.gateway("status", poll_interval=POLL_INTERVAL) as gw:
            token = gw.issue_token(USER, "researcher")
            op = gw.issue_token("bench-op", "operator")
            async with session(token) as http, session(op) as ophttp:
                metrics = Metrics(ophttp, gw)
                seconds, how = await submit_centers(http, gw.url, specs, per, created)
                for c in CENTERS:
                    await created.check_queued(c, per[c])
                print(
                    f"  {BENCH}: {n_total} jobs submitted in {seconds:.1f} s ({how})",
                    file=sys.stderr,
                    flush=True,
                )
                await metrics.wait_ticks(2, CENTERS)  # the submissions' own wake-ups over
                seen = await window(metrics, ticks)
        raw = await raw_squeue(logins["centera"], 5)
        figs += tick_figures(seen, raw, n_total, per, seconds, how)
        ctx.notes.append(tick_notes(seen, raw, n_total, seconds, how))

        seed = ctx.work / "rss-seed"
        shutil.copytree(ctx.work / "status" / "data", seed)
        added = await add_completed(seed / STORE_FILE, records)
        with ctx.gateway("rss-10k", seed_data=seed, poll_interval=POLL_INTERVAL) as gw:
            op = gw.issue_token("bench-op", "operator")
            async with session(op) as ophttp:
                await Metrics(ophttp, gw).wait_ticks(3, CENTERS)
                served = await page_all(ophttp, gw.url)
            status10k = proc_status(gw.pid)
        if served != records:
            raise BenchError(f"GET /v1/jobs served {served} records, not {records}")
        with ctx.gateway("rss-empty", poll_interval=POLL_INTERVAL) as gw:
            await asyncio.sleep(POLL_INTERVAL)
            empty = proc_status(gw.pid)
        hwm = status10k["VmHWM"] / MIB
        ctx.notes.append(
            f"Benchmark 2, gateway memory: {records:,} job records ({added:,} COMPLETED "
            f"copies added to the store, {n_total:,} live), after 3 poll ticks and all "
            f"{-(-records // 1000)} pages of GET /v1/jobs?limit=1000: VmRSS "
            f"{status10k['VmRSS'] / MIB:.1f} MiB, VmHWM {hwm:.1f} MiB; empty store, "
            f"{POLL_INTERVAL:g} s after start: VmRSS {empty['VmRSS'] / MIB:.1f} MiB, VmHWM "
            f"{empty['VmHWM'] / MIB:.1f} MiB."
        )
        figs += [
            Figure(
                BENCH, f"gateway VmHWM, {records:,} records ({n_total:,} live)", hwm, "MiB",
                baseline=empty["VmRSS"] / MIB, baseline_name="VmRSS, empty store, after start",
                target=f"< {RSS_TARGET_MIB:g} MiB", met=hwm < RSS_TARGET_MIB,
                note=f"{added} COMPLETED records added; 3 poll ticks, all pages of 1000 read",
            ),
            Figure(
                BENCH, f"reference: gateway VmRSS, {records:,} records", status10k["VmRSS"] / MIB,
                "MiB", note="after the same",
            ),
            Figure(
                BENCH, "reference: gateway VmHWM, empty store", empty["VmHWM"] / MIB, "MiB",
            ),
        ]  # fmt: skip
    finally:
        await created.cleanup()
    return figs


async def submit_centers(
    http: aiohttp.ClientSession,
    url: str,
    specs: dict[str, dict[str, Any]],
    per: dict[str, int],
    c: Created,
) -> tuple[float, str]:
    """`per[center]` jobs at each center, the centers in parallel; (seconds, how)."""
    results = await asyncio.gather(
        *(submit_all(http, url, specs[center], per[center], c) for center in specs)
    )
    each = ", ".join(f"{center} {s:.1f} s" for center, (s, _) in zip(specs, results, strict=True))
    return max(s for s, _ in results), f"{results[0][1]}; {each}"


def tick_notes(
    seen: dict[str, dict[str, Any]], raw: float, n_total: int, submit_seconds: float, how: str
) -> str:
    lines = [
        f"Benchmark 2, {n_total:,} held jobs submitted in {submit_seconds:.1f} s ({how}); "
        f"then, polled every {POLL_INTERVAL:g} s with no request but /metrics scrapes:"
    ]
    for c in CENTERS:
        s = seen[c]
        each = " ".join(f"{d * 1000:.0f}" for d in s["durations"])
        lines.append(
            f"    {c}: {s['commands']:.0f} SSH commands over {s['ticks']:.0f} ticks "
            f"({s['per_tick']:.2f} per tick); tick ms: {each}"
        )
    lines.append(f"    raw squeue at centera over a reused ssh connection: {raw * 1000:.0f} ms")
    return "\n".join(lines)


def tick_figures(
    seen: dict[str, dict[str, Any]],
    raw: float,
    n_total: int,
    per: dict[str, int],
    submit_seconds: float,
    how: str,
) -> list[Figure]:
    out = []
    for c in CENTERS:
        s = seen[c]
        out.append(
            Figure(
                BENCH, f"{c}: SSH commands per poll tick ({per[c]} jobs)", s["per_tick"],
                "cmd/tick", target=f"<= {COMMANDS_TARGET:g}", met=s["per_tick"] <= COMMANDS_TARGET,
                note=f"{s['commands']:.0f} commands over {s['ticks']:.0f} ticks",
            )
        )  # fmt: skip
    for c in CENTERS:
        d = seen[c]["durations"]
        out.append(
            Figure(
                BENCH, f"{c}: poll tick wall time p50 ({per[c]} jobs)", median(d) * 1000, "ms",
                baseline=raw * 1000, baseline_name="raw squeue at centera, reused ssh",
                note=f"max {max(d) * 1000:.0f} ms over {len(d)} ticks",
            )
        )  # fmt: skip
    out.append(
        Figure(
            BENCH, f"reference: {n_total:,} jobs submitted", n_total / submit_seconds, "jobs/s",
            note=how,
        )
    )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.status_scale", run, argv)


if __name__ == "__main__":
    sys.exit(main())
