"""Benchmark 4: submission latency of one job, the gateway against `ssh ... sbatch`.

Run from the repository root (as root, like the testbed)::

    .venv/bin/python -m benchmarks.submit_latency [--quick]

50 times (`--quick`: 8), alternating sample by sample: one held job through
`POST /v1/jobs` at centera, timed until the 201 answer with its native id; and one
`ssh -S <sock> ... sbatch --hold --parsable --wrap true -o /dev/null` over a reused
OpenSSH ControlMaster connection, timed until the id is printed. p50 and p99 of each
(nearest rank: with 50 samples p99 is the largest), and the ratio gateway/ssh (lower
is better; reported, not judged). Every job is cancelled at the end, also on errors.
"""

from __future__ import annotations

import sys
import time

from benchmarks.harness import BenchError, Context, Figure, bench_main
from benchmarks.submit_throughput import (
    CENTER,
    SBATCH_HELD,
    USER,
    Created,
    Login,
    control_master,
    held_spec,
    percentile,
    run_argv,
    session,
    submit_one,
)

BENCH = "4 submit latency"


async def run(ctx: Context) -> list[Figure]:
    n = 8 if ctx.quick else 50
    login = Login.of(ctx.tb, CENTER)
    created = Created({CENTER: login})
    spec = held_spec(ctx.tb, CENTER)
    gateway_s: list[float] = []
    ssh_s: list[float] = []
    try:
        with ctx.gateway("latency") as gw:
            token = gw.issue_token(USER, "researcher")
            async with session(token) as http, control_master(login.target) as ssh:
                command = [*ssh, *SBATCH_HELD.split()]
                await submit_one(http, gw.url, spec, created)  # warm-up: pooled connection
                _, out, _ = await run_argv(command, "ssh sbatch")  # and the baseline's
                created.add(CENTER, out.strip().split(";", 1)[0])
                for i in range(2 * n):
                    start = time.perf_counter()
                    if i % 2 == 0:
                        await submit_one(http, gw.url, spec, created)
                        gateway_s.append(time.perf_counter() - start)
                    else:
                        _, out, _ = await run_argv(command, "ssh sbatch")
                        ssh_s.append(time.perf_counter() - start)
                        created.add(CENTER, out.strip().split(";", 1)[0])
        await created.check_queued(CENTER, 2 * n + 2)
    finally:
        await created.cleanup()
    if len(gateway_s) != n or len(ssh_s) != n:
        raise BenchError(f"{len(gateway_s)} gateway and {len(ssh_s)} ssh samples, not {n}")
    ctx.notes.append(
        f"Benchmark 4, {n} samples each at {CENTER}, alternating, ms in order:\n"
        f"    gateway POST /v1/jobs: {' '.join(f'{x * 1000:.0f}' for x in gateway_s)}\n"
        f"    ssh+ControlMaster sbatch: {' '.join(f'{x * 1000:.0f}' for x in ssh_s)}"
    )
    figs = []
    for q, label in ((50, "p50"), (99, "p99")):
        gw_q, ssh_q = percentile(gateway_s, q) * 1000, percentile(ssh_s, q) * 1000
        note = f"{n} samples each, alternating; ratio: lower is better"
        if q == 99:
            note += f"; nearest rank: with {n} samples p99 is the largest"
        figs.append(
            Figure(
                BENCH, f"POST /v1/jobs until 201 with native id, {label}", gw_q, "ms",
                baseline=ssh_q, baseline_name=f"ssh+ControlMaster sbatch {label}",
                target="report only (lower is better)", note=note,
            )
        )  # fmt: skip
    return figs


def main(argv: list[str] | None = None) -> int:
    return bench_main("benchmarks.submit_latency", run, argv)


if __name__ == "__main__":
    sys.exit(main())
