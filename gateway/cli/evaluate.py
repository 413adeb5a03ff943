"""`hpcfed evaluate CENTER`: run a center's access evaluation and wait for its verdict.

Exit status: 0 admitted, 1 refused, 2 the evaluation could not be run or
followed (the gateway refused the request, it ended in ERROR, or --timeout
passed). Progress is printed one line per finished check, from polling the
record about once a second.
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


async def cmd_evaluate(client: HpcfedClient, args: argparse.Namespace) -> int:
    if args.no_wait and (args.report or args.json_file):
        print("hpcfed: --report and --json need the verdict; drop --no-wait", file=sys.stderr)
        return EXIT_ERROR
    try:
        return await _evaluate(client, args)
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
    p.add_argument("--no-wait", action="store_true", help="start it, print its id, and return")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.add_argument("--report", metavar="FILE.md", help="write the Markdown report to FILE.md")
    p.add_argument(
        "--json", dest="json_file", metavar="FILE.json", help="write the JSON record to FILE.json"
    )
