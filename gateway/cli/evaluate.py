"""`hpcfed evaluate CENTER`: run a center's access evaluation and wait for its verdict.

Exit status: 0 admitted, 1 refused, 2 the evaluation could not be run or
followed (the gateway refused the request, it ended in ERROR, or --timeout
passed). Progress is printed one line per finished check, from polling the
record about once a second.

`hpcfed evaluate CENTER --apps` runs the canaries of the center's application
bindings instead, one line per binding as its verdict comes in: exit 0 when every
one is verified, 1 when any failed, 2 as above.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from gateway.client.core import ClientError, HpcfedClient

EXIT_ADMITTED, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
POLL_INTERVAL = 1.0
FINISHED = ("passed", "failed", "skipped")


class Progress:
    """Prints each check once, when it has finished."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown: set[str] = set()

    def __call__(self, record: dict[str, Any]) -> None:
        for check in record.get("checks", []):
            if check["state"] in FINISHED and check["name"] not in self.shown:
                self.shown.add(check["name"])
                took = check.get("duration_seconds")
                when = f"{took:6.2f}s" if took is not None else "      -"
                line = f"  {check['state']:7}  {check['name']:22} {when}  {check['message']}"
                print(line.rstrip(), file=self.out, flush=True)


def _summary(record: dict[str, Any], out: TextIO) -> None:
    if record["state"] == "ERROR":
        print(f"evaluation {record['id']} could not run: {record.get('error')}", file=out)
        return
    score = record.get("score")
    shown = "-" if score is None else f"{score:g}/100"
    print(f"verdict: {record.get('verdict')} (score {shown})", file=out)
    reasons = record.get("reasons") or []
    if reasons:
        print("reasons:", file=out)
        for reason in reasons:
            print(f"  - {reason}", file=out)


def _write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


async def _evaluate(client: HpcfedClient, args: argparse.Namespace) -> int:
    out = sys.stderr if args.json else sys.stdout  # --json: stdout holds the record only
    record = await client.evaluate(args.center)
    if args.no_wait:
        if args.json:
            print(json.dumps(record, indent=2, sort_keys=True))
        else:
            print(record["id"])
        return EXIT_ADMITTED
    print(
        f"evaluating {args.center}: evaluation {record['id']}, suite {record['suite_version']}",
        file=out,
        flush=True,
    )
    try:
        record = await client.wait_evaluation(
            args.center,
            record["id"],
            timeout=args.timeout,
            interval=POLL_INTERVAL,
            progress=Progress(out),
        )
    except TimeoutError:
        print(
            f"hpcfed: evaluation {record['id']} still running after {args.timeout:g}s; "
            f"it goes on at the gateway",
            file=sys.stderr,
        )
        return EXIT_ERROR
    _summary(record, out)
    if args.json_file:
        _write(args.json_file, json.dumps(record, indent=2, sort_keys=True) + "\n")
        print(f"JSON record written to {args.json_file}", file=out)
    if args.report:
        _write(args.report, await client.evaluation_report(args.center, record["id"]))
        print(f"report written to {args.report}", file=out)
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
    if record["state"] != "DONE":
        return EXIT_ERROR
    return EXIT_ADMITTED if record.get("verdict") == "admit" else EXIT_REFUSED


class CanaryProgress:
    """Prints each binding's outcome once, when its canary has been recorded."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown: set[tuple[str, str]] = set()

    def __call__(self, outcomes: list[dict[str, Any]]) -> None:
        for outcome in outcomes:
            key = (outcome["app"], outcome["version"])
            if outcome.get("done", True) and key not in self.shown:
                self.shown.add(key)
                print(canary_line(outcome), file=self.out, flush=True)


def canary_line(outcome: dict[str, Any]) -> str:
    """`lammps 7Jan2022: verified (3 checks passed (job 123))`."""
    message = f" ({outcome['message']})" if outcome.get("message") else ""
    return f"{outcome['app']} {outcome['version']}: {outcome['state']}{message}"


async def _canaries(client: HpcfedClient, args: argparse.Namespace) -> int:
    out = sys.stderr if args.json else sys.stdout  # --json: stdout holds the outcomes only
    run = await client.run_canaries(args.center)
    if args.no_wait:
        print(json.dumps(run, indent=2, sort_keys=True)) if args.json else print(run["id"])
        return EXIT_ADMITTED
    count = len(run["bindings"])
    print(
        f"canaries of {args.center}: run {run['id']}, {count} binding{'s' * (count != 1)}",
        file=out,
        flush=True,
    )
    progress = CanaryProgress(out)
    try:
        outcomes = await client.wait_canaries(
            args.center, run, timeout=args.timeout, interval=POLL_INTERVAL, progress=progress
        )
    except TimeoutError:
        print(
            f"hpcfed: canary run {run['id']} still running after {args.timeout:g}s; "
            f"it goes on at the gateway",
            file=sys.stderr,
        )
        return EXIT_ERROR
    verified = sum(o["state"] == "verified" for o in outcomes)
    print(f"{verified} of {len(outcomes)} verified", file=out)
    document = {**run, "results": outcomes}
    if args.json_file:
        _write(args.json_file, json.dumps(document, indent=2, sort_keys=True) + "\n")
        print(f"JSON outcomes written to {args.json_file}", file=out)
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    return EXIT_ADMITTED if verified == len(outcomes) else EXIT_REFUSED


async def cmd_evaluate(client: HpcfedClient, args: argparse.Namespace) -> int:
    if args.json_file == "-":  # a bare --json: the record (or outcomes) on stdout
        args.json, args.json_file = True, None
    if args.no_wait and (args.report or args.json_file):
        print("hpcfed: --report and --json need the verdict; drop --no-wait", file=sys.stderr)
        return EXIT_ERROR
    if args.apps and args.report:
        print("hpcfed: --report is the access evaluation's; drop it with --apps", file=sys.stderr)
        return EXIT_ERROR
    try:
        return await (_canaries if args.apps else _evaluate)(client, args)
    except ClientError as exc:
        print(f"hpcfed: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"hpcfed: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_ERROR


EVALUATE_COMMANDS: dict[str, Callable[[HpcfedClient, argparse.Namespace], Awaitable[int]]] = {
    "evaluate": cmd_evaluate
}


def add_evaluate_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="run a center's access evaluation (needs centers.admin); exit 0 admitted, "
        "1 refused, 2 error",
    )
    p.add_argument("center")
    p.add_argument(
        "--apps",
        action="store_true",
        help="run the canaries of the center's application bindings instead; exit 0 all "
        "verified, 1 any failed, 2 error",
    )
    p.add_argument("--no-wait", action="store_true", help="start it, print its id, and return")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.add_argument("--report", metavar="FILE.md", help="write the Markdown report to FILE.md")
    p.add_argument(
        "--json",
        dest="json_file",
        metavar="FILE.json",
        nargs="?",
        const="-",
        help="write the JSON record to FILE.json; without FILE, print it on stdout",
    )
