"""Run the gateway's performance benchmarks on the testbed and print one table.

From the repository root, as root (the testbed needs it)::

    .venv/bin/python -m benchmarks [--quick] [--profile [DIR]] [--only 1,3]
                                   [--markdown FILE] [--keep]

or `make bench`. In order: 1 submission throughput, 2 status at scale, 3 API reads,
4 submission latency, 6 store backends (each module's `run(ctx)`, each with its own
gateways), then 5 SSH economy from what the gateways of 1-4 and 6 held open. A
benchmark that fails is an error row and the others still run. Exit status 2 if a
benchmark failed, 1 if a target was not met, 130 if interrupted, else 0. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from benchmarks import ssh_economy
from benchmarks.harness import (
    REPO,
    Context,
    Figure,
    interrupt,
    machine,
    markdown_table,
    text_table,
)
from tests.testbed import Testbed, TestbedError

#: (number, name, module with `async def run(ctx) -> list[Figure]`)
BENCHMARKS = (
    (1, "submit throughput", "benchmarks.submit_throughput"),
    (2, "status at scale", "benchmarks.status_scale"),
    (3, "API reads", "benchmarks.api_reads"),
    (4, "submit latency", "benchmarks.submit_latency"),
    (6, "store backends", "benchmarks.store_backends"),
)
SSH_ECONOMY = (5, "SSH economy")
ALL = (*(n for n, _, _ in BENCHMARKS), SSH_ECONOMY[0])
HEADING = "# Gateway performance (python -m benchmarks)"
END_MARK = "<!-- end of the python -m benchmarks section -->"
DEFAULT_COMMAND = ".venv/bin/python -m benchmarks"


@dataclass
class Outcome:
    number: int
    name: str
    seconds: float
    error: str = ""  # "" if it ran


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="the gateway's performance benchmarks on the testbed (benchmarks/README.md)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: small counts, short runs")
    p.add_argument(
        "--profile",
        nargs="?",
        const="",
        metavar="DIR",
        help="py-spy the gateways where a benchmark supports it (raw stacks to DIR, "
        "default <temp dir>/profiles)",
    )
    p.add_argument(
        "--only",
        metavar="N,N",
        help=f"run only these benchmarks ({','.join(map(str, ALL))}; default all)",
    )
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write the results section there")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (gateway logs)")
    args = p.parse_args(argv)
    if args.only:
        try:
            args.only = {int(x) for x in args.only.split(",") if x.strip()}
        except ValueError:
            p.error("--only: comma-separated benchmark numbers")
        if not args.only or not args.only <= set(ALL):
            p.error(f"--only: numbers among {','.join(map(str, ALL))}")
    else:
        args.only = set(ALL)
    return args


def _first_line(text: str, limit: int = 160) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _wall(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def run_one(
    ctx: Context, number: int, name: str, module: str
) -> tuple[list[Figure], Outcome, list[str]]:
    """One benchmark: its figures (an error row if it failed), outcome, gateway labels."""
    bench = f"{number} {name}"
    before = {label for label, _ in ctx.connections}
    start = time.monotonic()
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        msg = f"benchmark {number}: module not available ({module})"
        print(msg, file=sys.stderr, flush=True)
        return [_error_row(bench, "module not available")], Outcome(number, name, 0.0, msg), []
    print(f"benchmark {number}: {name} ...", file=sys.stderr, flush=True)
    try:
        figures = list(asyncio.run(mod.run(ctx)))
        error = ""
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"benchmark {number} failed: {error}", file=sys.stderr, flush=True)
        traceback.print_exc(file=sys.stderr)
        figures = [_error_row(bench, error)]
        ctx.notes.append(f"{bench} failed: {error}")
    seconds = time.monotonic() - start
    print(f"benchmark {number}: {name}: {_wall(seconds)}", file=sys.stderr, flush=True)
    labels = sorted({label for label, _ in ctx.connections} - before)
    return figures, Outcome(number, name, seconds, error), labels


def _error_row(bench: str, error: str) -> Figure:
    return Figure(
        bench=bench,
        name=f"error: {_first_line(error)}",
        value=float("nan"),
        unit="",
        target="runs",
        met=False,
        note=error,
    )


def figure_notes(figures: list[Figure]) -> list[str]:
    """Each row's note (error rows' messages are in the notes already)."""
    return [
        f"{f.bench}, {f.name}: {f.note}"
        for f in figures
        if f.note and not f.name.startswith("error: ")
    ]


def markdown_section(
    figures: list[Figure],
    notes: list[str],
    outcomes: list[Outcome],
    info: dict[str, str],
    command: str,
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        HEADING,
        "",
        "Written by `python -m benchmarks` (method: `benchmarks/README.md`), replaced on "
        "each run. Baselines are measured in the same run; read the ratios.",
        "",
        f"## {when}",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        "",
        markdown_table(figures),
        "",
    ]
    simple = [n for n in notes if "\n" not in n]
    blocks = [n for n in notes if "\n" in n]
    if simple:
        out += ["Notes:", ""] + [f"- {n}" for n in simple] + [""]
    for block in blocks:
        head, _, rest = block.partition("\n")
        out += [head, "", "```text", rest, "```", ""]
    out.append(
        "Wall time: "
        + "; ".join(
            f"{o.number} {o.name} {_wall(o.seconds)}" + (" (failed)" if o.error else "")
            for o in outcomes
        )
        + f"; total {_wall(sum(o.seconds for o in outcomes))}."
    )
    out += ["", END_MARK, ""]
    return "\n".join(out)


def write_section(path: Path, section: str) -> None:
    """Put `section` at the top of `path`, replacing this harness's earlier one; the rest
    of the file (the files_throughput results) stays as it is."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == HEADING), None)
    if start is None:
        rest = text
    else:
        end = next(
            (i + 1 for i, line in enumerate(lines) if i > start and line.strip() == END_MARK),
            None,
        )
        if end is None:  # no end mark: up to the next top-level heading
            end = next(
                (i for i, line in enumerate(lines) if i > start and line.startswith("# ")),
                len(lines),
            )
        while end < len(lines) and not lines[end].strip():
            end += 1
        rest = "".join(lines[:start] + lines[end:])
    path.write_text(section + ("\n" + rest if rest else ""), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.geteuid() != 0:
        print("python -m benchmarks: run as root (the testbed needs it)", file=sys.stderr)
        return 2
    if Path.cwd().resolve() != REPO:
        print(f"python -m benchmarks: run from the repository root ({REPO})", file=sys.stderr)
        return 2
    command = shlex.join([*DEFAULT_COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])
    info = machine()
    tb = Testbed()
    print("testbed: up ...", file=sys.stderr, flush=True)
    try:
        tb.up()
    except (TestbedError, OSError) as exc:
        print(f"benchmarks failed: testbed: {exc}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="hpcfed-bench-"))
    profile_dir = None
    if args.profile is not None:
        profile_dir = Path(args.profile) if args.profile else work / "profiles"
    ctx = Context(tb=tb, work=work, quick=args.quick, profile_dir=profile_dir)
    figures: list[Figure] = []
    outcomes: list[Outcome] = []
    owners: dict[str, str] = {}
    try:
        for number, name, module in BENCHMARKS:
            if number not in args.only:
                continue
            rows, outcome, labels = run_one(ctx, number, name, module)
            figures += rows
            outcomes.append(outcome)
            owners.update(dict.fromkeys(labels, f"benchmark {number}"))
        if SSH_ECONOMY[0] in args.only:
            start = time.monotonic()
            try:
                figures += ssh_economy.figures(ctx, owners)
                error = ""
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc(file=sys.stderr)
                figures.append(_error_row(f"{SSH_ECONOMY[0]} {SSH_ECONOMY[1]}", error))
            outcomes.append(Outcome(*SSH_ECONOMY, time.monotonic() - start, error))
    except KeyboardInterrupt:
        print("benchmarks interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"temp dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    notes = ctx.notes + figure_notes(figures)
    print(text_table(figures))
    print()
    for note in notes:
        print(note)
    print("\nwall time:")
    for o in outcomes:
        print(f"  {o.number} {o.name:24} {_wall(o.seconds)}" + (" (failed)" if o.error else ""))
    print("\nmachine:")
    for k, v in info.items():
        print(f"  {k:16} {v}")
    if args.markdown is not None:
        write_section(args.markdown, markdown_section(figures, notes, outcomes, info, command))
        print(f"\nresults section written to {args.markdown}", file=sys.stderr)
    if any(o.error for o in outcomes):
        return 2
    return 1 if any(f.met is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
