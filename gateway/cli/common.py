"""What the commands of `hpcfed` share: exit statuses, JSON and table output, progress
bars on stderr, and the error for a local file that cannot be used."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from gateway.client.core import ClientError, HpcfedClient
from gateway.client.files import Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """The rows as aligned columns under upper-case headings; a missing value is '-'."""
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def bad_file(message: str) -> ClientError:
    """A local file (or spec) the command cannot use, reported like the gateway's errors."""
    return ClientError(0, "bad_file", message)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching: stderr a terminal, and no --json."""
    return not args.json and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str) -> Iterator[Progress]:
    """A `Progress` callback drawing a bar on stderr (rich), or doing nothing."""
    if not enabled:
        yield lambda done, total: None
        return
    import rich.console
    import rich.progress as rp

    with rp.Progress(
        rp.TextColumn("[bold]{task.description}"),
        rp.BarColumn(),
        rp.DownloadColumn(binary_units=True),
        rp.TransferSpeedColumn(),
        rp.TimeRemainingColumn(),
        console=rich.console.Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


async def submitted(client: HpcfedClient, job: dict[str, Any], args: argparse.Namespace) -> int:
    """After a submission: its id (or record with --json), or with --wait its end;
    exit 0 unless it was waited for and did not complete."""
    if not args.wait:
        print_json(job) if args.json else print(job["id"])
        return EXIT_OK
    if not args.json:
        print(f"submitted {job['id']} to {job['center']}", file=sys.stderr)
    job = await client.wait(job["id"], timeout=args.timeout)
    if args.json:
        print_json(job)
    else:
        code = f" (exit code {job['exit_code']})" if job.get("exit_code") is not None else ""
        print(f"{job['id']} {job['state']}{code}")
    return EXIT_OK if job["state"] == "COMPLETED" else EXIT_FAILED
