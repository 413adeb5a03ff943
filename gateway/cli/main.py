"""The `hpcfed` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gateway.cli.admin import ADMIN_COMMANDS, add_admin_parsers
from gateway.cli.apps import APPS_COMMANDS, add_apps_parsers, describe_application
from gateway.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    print_json,
    show_progress,
    submitted,
    table,
)
from gateway.cli.evaluate import EVALUATE_COMMANDS, add_evaluate_parsers
from gateway.cli.files import FILE_COMMANDS, add_file_parsers
from gateway.cli.inputs import prepare_local_inputs, upload_local_inputs
from gateway.cli.watch import watch
from gateway.client.core import URL_FILE, ClientError, HpcfedClient, discover


def _describe(job: dict[str, Any]) -> None:
    fields = [
        "id",
        "name",
        "state",
        "center",
        "native_id",
        "native_state",
        "exit_code",
        "reason",
        "created_at",
        "submitted_at",
        "finished_at",
    ]
    job = {**job, "name": job["spec"].get("name")}
    for key in fields:
        if job.get(key) is not None:
            print(f"{key + ':':14} {job[key]}")
    if job.get("placement"):
        print(f"{'placement:':14} {job['placement']['explanation']}")
    if job.get("application"):
        for label, text in describe_application(job["application"]):
            print(f"{label + ':':14} {text}")
    if job.get("usage"):
        u = job["usage"]
        print(
            f"{'usage:':14} {u['core_hours']:g} core-hours, {u['gpu_hours']:g} GPU-hours, "
            f"{u['cost']:g} {u['price']['currency']}"
        )


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.http.serve import run
    from gateway.identity.vault import VaultError
    from gateway.logs import setup_logging

    try:
        config = load_config(args.config)
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except ConfigError as exc:
        print(f"hpcfed: configuration refused:\n{exc}", file=sys.stderr)
        return EXIT_USAGE

    setup_logging(args.log_level, args.log_format, sys.stderr)
    host = args.host or config.gateway.listen.host
    port = config.gateway.listen.port if args.port is None else args.port
    try:
        run(config, host, port, config.data_dir / URL_FILE)
    except VaultError as exc:
        print(f"hpcfed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


# ---------------------------------------------------------------- client commands


def _load_spec(path: str, center: str | None) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        spec = yaml.safe_load(text)
    except OSError as exc:
        raise ClientError(0, "bad_file", f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ClientError(0, "bad_file", f"{path}: not valid YAML or JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise ClientError(0, "bad_file", f"{path}: a job spec must be a mapping")
    if center:
        spec["center"] = center
    return spec


async def cmd_submit(client: HpcfedClient, args: argparse.Namespace) -> int:
    spec, uploads = prepare_local_inputs(_load_spec(args.file, args.center), args.file)
    job = await client.submit(spec, idempotency_key=args.key)
    if job.get("placement") and not args.json:
        print(f"placed: {job['placement']['explanation']}", file=sys.stderr)
    await upload_local_inputs(client, job, uploads, progress=show_progress(args))
    return await submitted(client, job, args)


async def cmd_status(client: HpcfedClient, args: argparse.Namespace) -> int:
    if args.watch:
        return await watch(client, args.id, as_json=args.json)
    if args.id:
        job = await client.get(args.id)
        print_json(job) if args.json else _describe(job)
        return EXIT_OK
    page = await client.list(state=args.state, center=args.center, limit=args.limit)
    if args.json:
        print_json(page)
    else:
        rows = [{**j, "name": j["spec"].get("name")} for j in page["jobs"]]
        table(rows, ["id", "name", "center", "state", "exit_code", "created_at"])
    return EXIT_OK


async def cmd_logs(client: HpcfedClient, args: argparse.Namespace) -> int:
    stream = "stderr" if args.stderr else "stdout"
    out = sys.stdout.buffer
    if args.follow:
        async for chunk in client.follow_output(args.id, stream, element=args.element):
            out.write(chunk)
            out.flush()
    else:
        out.write(await client.output(args.id, stream, element=args.element))
    out.flush()
    return EXIT_OK


async def cmd_cancel(client: HpcfedClient, args: argparse.Namespace) -> int:
    job = await client.cancel(args.id)
    print_json(job) if args.json else print(f"{job['id']} {job['state']} (cancel requested)")
    return EXIT_OK


async def cmd_centers(client: HpcfedClient, args: argparse.Namespace) -> int:
    centers = await client.centers()
    if args.json:
        print_json(centers)
        return EXIT_OK
    rows = [{**c, "admitted": "yes" if c["admission"]["admitted"] else "no"} for c in centers]
    table(rows, ["id", "type", "region", "admitted", "name"])
    return EXIT_OK


async def cmd_power(client: HpcfedClient, args: argparse.Namespace) -> int:
    doc = await client.computing_power(args.center, refresh=args.refresh)
    if args.json:
        print_json(doc)
        return EXIT_OK
    live, peak = doc["live"], doc["peak"]
    print(f"{doc['center']['id']} ({doc['center']['type']}, region {doc['center']['region']})")
    print(
        f"  admitted: {'yes' if doc['admission']['admitted'] else 'no'}"
        f" - {doc['admission']['reason']}"
    )
    print(f"  peak: {peak['gflops']:g} GFLOP/s{'' if peak['complete'] else ' (incomplete)'}")
    if doc.get("measured"):
        m = doc["measured"]
        if m.get("hpl_gflops") is not None:
            of_peak = (
                f", {m['efficiency'] * 100:.1f}% of their {m['peak_gflops']:g} GFLOP/s peak"
                if m.get("efficiency") is not None
                else ""
            )
            print(
                f"  measured: HPL {m['hpl_gflops']:g} GFLOP/s on {m['cores']} cores "
                f"(N={m['problem_size']}){of_peak}"
            )
        else:
            print(f"  measured: {m['gflops_per_core']:g} GFLOP/s per core ({m['kernel']})")
    if live["status"] != "ok":
        print(f"  live: {live['status']}: {live.get('error')}")
    if live.get("cores"):
        cores, jobs = live["cores"], live["jobs"]
        print(
            f"  cores: {cores['idle']} idle, {cores['allocated']} allocated, "
            f"{cores['down']} down of {cores['total']}; jobs: {jobs['queued']} queued, "
            f"{jobs['running']} running"
        )
    for g in live.get("gpus", []):
        print(f"  gpus {g['model']}: {g['allocated']} of {g['total']} allocated")
    price, energy = doc["price"], doc["energy"]
    print(
        f"  price: {price['core_hour']:g} {price['currency']}/core-hour, "
        f"{price['gpu_hour']:g} {price['currency']}/GPU-hour"
    )
    print(
        f"  energy: PUE {energy['pue']:g}, {energy['green_share']:.0%} green, "
        f"{energy['carbon_intensity_g_per_kwh']:g} gCO2e/kWh"
    )
    rows = [
        {
            "partition": p["name"] + ("*" if p["default"] else ""),
            "nodes": p["nodes"],
            "cores": p["cores"],
            "mem/node": f"{p['memory_per_node_mib']}MiB",
            "gpus": ", ".join(f"{g['count']}x{g['model']}" for g in p["gpus"]) or "-",
            "max walltime": p["max_walltime_seconds"] or "unlimited",
        }
        for p in doc["partitions"]
    ]
    if rows:
        table(rows, ["partition", "nodes", "cores", "mem/node", "gpus", "max walltime"])
    return EXIT_OK


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    """Usage figures as people read them: hours to 4 decimals, cost to 4."""
    return {
        **row,
        **{k: f"{row[k]:.4f}" for k in ("core_hours", "gpu_hours", "cost") if k in row},
    }


async def cmd_usage(client: HpcfedClient, args: argparse.Namespace) -> int:
    report = await client.usage(
        user=args.user,
        center=args.center,
        since=args.since,
        until=args.until,
        group_by=args.by,
        jobs=args.jobs or None,
    )
    if args.json:
        print_json(report)
        return EXIT_OK
    columns = [*report["group_by"], "jobs", "core_hours", "gpu_hours", "cost", "currency"]
    table([_figures(r) for r in report["totals"]], columns)
    if args.jobs:
        print()
        rows = [_figures(j) for j in report["jobs"]]
        table(rows, ["id", "user", "center", "state", "core_hours", "gpu_hours", "cost"])
    return EXIT_OK


# ---------------------------------------------------------------- offline commands


def cmd_center(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, center_schema, load_center_file

    if args.center_cmd == "schema":
        sys.stdout.write(center_schema())
        return EXIT_OK
    if args.center_cmd == "descriptor-schema":
        from gateway.centers.descriptor import descriptor_schema

        sys.stdout.write(descriptor_schema())
        return EXIT_OK
    status = EXIT_OK
    for path in args.files:
        try:
            center = load_center_file(Path(path))
            print(f"{path}: ok (center {center.id}, {center.type})")
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_FAILED
    return status


CLIENT_COMMANDS = {
    "submit": cmd_submit,
    "status": cmd_status,
    "logs": cmd_logs,
    "cancel": cmd_cancel,
    "centers": cmd_centers,
    "power": cmd_power,
    "usage": cmd_usage,
    **FILE_COMMANDS,
    **EVALUATE_COMMANDS,
    **APPS_COMMANDS,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcfed", description="hpcfed federation gateway")
    parser.add_argument("--url", help="gateway URL (env HPCFED_URL; default: the local gateway)")
    parser.add_argument("--token", help="bearer token (prefer env HPCFED_TOKEN)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", default=os.environ.get("HPCFED_CONFIG", "configs/gateway.yaml"))
    p.add_argument("--host")
    p.add_argument("--port", type=int, help="0 picks a free port")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format", default="json", choices=["json", "text"], help="log lines (default json)"
    )

    p = sub.add_parser("submit", help="submit a job spec (YAML or JSON file, - for stdin)")
    p.add_argument("file")
    p.add_argument("--center", help="center id, or auto")
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    p.add_argument("--key", help="idempotency key: the same key returns the same job")

    p = sub.add_parser("status", help="list jobs, or show one")
    p.add_argument("id", nargs="?")
    p.add_argument("--state", help="comma-separated states, e.g. RUNNING,QUEUED")
    p.add_argument("--center")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument(
        "--watch", action="store_true", help="print changes as they happen (one job: until it ends)"
    )

    p = sub.add_parser("logs", help="print a job's output")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    p.add_argument("--stderr", action="store_true", help="stderr instead of stdout")
    p.add_argument("--element", type=int, help="for an array job: the element's index")

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("id")

    sub.add_parser("centers", help="list the federation's centers")

    p = sub.add_parser("power", help="a center's computing-power descriptor")
    p.add_argument("center")
    p.add_argument("--refresh", action="store_true", help="ask the scheduler now")

    p = sub.add_parser("usage", help="core-hours, GPU-hours and cost of finished jobs")
    p.add_argument("--user", help="an operator may name any user; default: all they may see")
    p.add_argument("--center")
    p.add_argument("--since", help="ISO date or time, e.g. 2026-12-01")
    p.add_argument("--until", help="ISO date or time (exclusive)")
    p.add_argument("--by", default="user,center", help="group by: user, center, or both")
    p.add_argument("--jobs", action="store_true", help="list each job too")

    p = sub.add_parser("center", help="center configuration tools")
    csub = p.add_subparsers(dest="center_cmd", required=True)
    c = csub.add_parser("check", help="validate center YAML files")
    c.add_argument("files", nargs="+")
    csub.add_parser("schema", help="print the JSON Schema of a center file")
    csub.add_parser(
        "descriptor-schema", help="print the JSON Schema of the computing-power descriptor"
    )

    add_admin_parsers(sub)
    add_file_parsers(sub)
    add_evaluate_parsers(sub)
    add_apps_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "center":
        return cmd_center(args)
    if args.command in ADMIN_COMMANDS:
        return ADMIN_COMMANDS[args.command](args)
    url, token = discover(args.url, args.token)

    async def run() -> int:
        async with HpcfedClient(url, token) as client:
            return await CLIENT_COMMANDS[args.command](client, args)

    try:
        return asyncio.run(run())
    except ClientError as exc:
        print(f"hpcfed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except TimeoutError:
        print("hpcfed: timed out", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
