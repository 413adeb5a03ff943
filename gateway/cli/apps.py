"""The published applications: `hpcfed apps` (the catalog, and which center offers
which version with its canary's state), `hpcfed apps show|put|delete`, and
`hpcfed run APP --param k=v ...` (a job of an application).

`--param` values are typed by the application's definition (`GET /v1/apps/{name}`):
int, float and bool parameters get numbers and booleans, the others strings. An
unknown parameter or a value that is no int/float/bool is a usage error (exit 2)
before anything is submitted; bounds, patterns and choices are the gateway's to check.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    bad_file,
    print_json,
    submitted,
    table,
)
from gateway.client.core import ClientError, HpcfedClient

TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0"})


class ParamError(ValueError):
    """A `--param` the command refuses: its message names the parameter."""


def number(value: float | int | None) -> str:
    """A bound or default as people write it: 100000, not 100000.0 or 1e+05."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def typed_value(name: str, kind: str, text: str) -> int | float | bool | str:
    """`text` as a value of a parameter of type `kind`; ParamError naming `name`."""
    if kind == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise ParamError(f"{name}: must be an integer (int), got {text!r}") from None
    if kind == "float":
        try:
            value = float(text.strip())
        except ValueError:
            raise ParamError(f"{name}: must be a number (float), got {text!r}") from None
        if not math.isfinite(value):
            raise ParamError(f"{name}: must be a finite number (float), got {text!r}")
        return value
    if kind == "bool":
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ParamError(f"{name}: must be true or false (true/false/yes/no/1/0), got {text!r}")
    return text


def parse_params(
    pairs: list[str], parameters: Mapping[str, Mapping[str, Any]], app: str
) -> dict[str, int | float | bool | str]:
    """The `--param NAME=VALUE`s, typed by the definition's `parameters` (name ->
    {type, ...}); a ParamError for a pair without `=`, a name given twice, a name the
    application does not have, or a value its type cannot read."""
    values: dict[str, int | float | bool | str] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParamError(f"{pair!r}: expected NAME=VALUE")
        if name in values:
            raise ParamError(f"{name}: given twice")
        param = parameters.get(name)
        if param is None:
            known = ", ".join(parameters) or "none"
            raise ParamError(f"{name}: {app} has no such parameter (it has: {known})")
        values[name] = typed_value(name, str(param.get("type", "string")), text)
    return values


def run_spec(
    app: str,
    parameters: Mapping[str, Any],
    *,
    version: str | None = None,
    center: str = "auto",
    name: str | None = None,
    queue: str | None = None,
) -> dict[str, Any]:
    """The job spec `hpcfed run` submits."""
    request: dict[str, Any] = {"name": app, "parameters": dict(parameters)}
    if version:
        request["version"] = version
    spec: dict[str, Any] = {"name": name or app, "center": center, "app": request}
    if queue:
        spec["queue"] = queue
    return spec


def offered_at(version: Mapping[str, Any]) -> str:
    """`centera verified, centerb failed`, or `-` when no center offers the version."""
    return ", ".join(f"{o['center']} {o['state']}" for o in version.get("centers", [])) or "-"


def parameter_line(name: str, param: Mapping[str, Any]) -> str:
    """One parameter as `hpcfed apps show` prints it."""
    facts = [str(param.get("type", "string"))]
    if param.get("required"):
        facts.append("required")
    if param.get("default") is not None:
        default = param["default"]
        shown = str(default).lower() if isinstance(default, bool) else number(default)
        facts.append(f"default {shown}")
    if param.get("min") is not None:
        facts.append(f"min {number(param['min'])}")
    if param.get("max") is not None:
        facts.append(f"max {number(param['max'])}")
    if param.get("choices"):
        facts.append(f"one of {', '.join(param['choices'])}")
    if param.get("pattern"):
        facts.append(f"matching {param['pattern']}")
    description = str(param.get("description") or "").strip()
    line = f"  {name} ({'; '.join(facts)})"
    return f"{line}: {description}" if description else line


def describe_app(app: Mapping[str, Any]) -> list[str]:
    """`hpcfed apps show` of one application, as lines."""
    title = f": {app['title']}" if app.get("title") else ""
    source = {"file": "the gateway's files", "api": "put through the API"}.get(
        app.get("source", ""), app.get("source", "")
    )
    lines = [f"{app['name']}{title}" + (f" (from {source})" if source else "")]
    if app.get("description"):
        lines.append(f"  {' '.join(str(app['description']).split())}")
    lines.append("versions:")
    for version in app.get("versions", []):
        offers = version.get("centers", [])
        lines.append(f"  {version['version']}" + ("" if offers else ": no center offers it"))
        for o in offers:
            line = f"    {o['center']}: {o['state']}"
            if o.get("checked_at"):
                line += f", checked {o['checked_at']}"
            if o.get("modules"):
                line += f", modules {' '.join(o['modules'])}"
            if o.get("partitions"):
                line += f", partitions {' '.join(o['partitions'])}"
            if o["state"] == "failed" and o.get("message"):
                line += f": {o['message']}"
            lines.append(line)
    parameters = app.get("parameters") or {}
    lines.append("parameters:" if parameters else "parameters: none")
    lines.extend(parameter_line(name, p) for name, p in parameters.items())
    outputs = app.get("outputs") or []
    lines.append(f"outputs: {', '.join(outputs) if outputs else 'none'}")
    for key in ("resources", "limits"):
        if app.get(key):
            shown = ", ".join(f"{k} {number(v)}" for k, v in app[key].items())
            lines.append(f"{key}: {shown}")
    return lines


def shown_value(value: Any) -> str:
    """A parameter's value as it would be given to `--param`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return shlex.quote(value)
    return str(value)


def describe_application(application: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The `application` of a job record as (label, text) lines for `hpcfed status ID`."""
    rows = [("app", f"{application['name']} {application['version']}")]
    parameters = application.get("parameters") or {}
    shown = " ".join(f"{k}={shown_value(v)}" for k, v in sorted(parameters.items()))
    rows.append(("parameters", shown or "-"))
    if application.get("modules"):
        rows.append(("modules", " ".join(application["modules"])))
    if application.get("outputs"):
        rows.append(("outputs", ", ".join(application["outputs"])))
    return rows


# ---------------------------------------------------------------- commands


async def cmd_apps(client: HpcfedClient, args: argparse.Namespace) -> int:
    action = getattr(args, "apps_cmd", None)
    if action == "show":
        return await _show(client, args)
    if action == "put":
        return await _put(client, args)
    if action == "delete":
        await client.delete_app(args.name)
        print_json({"name": args.name, "deleted": True}) if args.json else print(
            f"deleted {args.name}"
        )
        return EXIT_OK
    apps = await client.apps(args.center)
    if args.json:
        print_json(apps)
        return EXIT_OK
    rows = [
        {"app": app["name"], "version": version["version"], "centers": offered_at(version)}
        for app in apps
        for version in app.get("versions", [])
    ]
    table(rows, ["app", "version", "centers"])
    return EXIT_OK


async def _show(client: HpcfedClient, args: argparse.Namespace) -> int:
    app = await client.app(args.name)
    if args.json:
        print_json(app)
    else:
        print("\n".join(describe_app(app)))
    return EXIT_OK


def _load_definition(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        document = yaml.safe_load(text)
    except OSError as exc:
        raise bad_file(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise bad_file(f"{path}: not valid YAML or JSON: {exc}") from None
    if not isinstance(document, dict):
        raise bad_file(f"{path}: an application definition must be a mapping")
    if not isinstance(document.get("name"), str) or not document["name"]:
        raise bad_file(f"{path}: name: the application's name is needed")
    return document


async def _put(client: HpcfedClient, args: argparse.Namespace) -> int:
    definition = _load_definition(args.file)
    app = await client.put_app(definition["name"], definition)
    if args.json:
        print_json(app)
    else:
        versions = ", ".join(v["version"] for v in app.get("versions", []))
        print(f"put {app['name']} (versions {versions})")
    return EXIT_OK


async def cmd_run(client: HpcfedClient, args: argparse.Namespace) -> int:
    try:
        definition = await client.app(args.app)
    except ClientError as exc:
        if exc.status == 404:
            raise ClientError(exc.status, exc.code, f"app.name: {exc.message}", exc.body) from None
        raise
    try:
        values = parse_params(args.param or [], definition.get("parameters") or {}, args.app)
    except ParamError as exc:
        print(f"hpcfed: --param {exc}", file=sys.stderr)
        return EXIT_USAGE
    spec = run_spec(
        args.app,
        values,
        version=args.version,
        center=args.center,
        name=args.name,
        queue=args.queue,
    )
    job = await client.submit(spec)
    if job.get("placement") and not args.json:
        print(f"placed: {job['placement']['explanation']}", file=sys.stderr)
    return await submitted(client, job, args)


APPS_COMMANDS: dict[str, Callable[[HpcfedClient, argparse.Namespace], Awaitable[int]]] = {
    "apps": cmd_apps,
    "run": cmd_run,
}


def _json_flag(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: `hpcfed --json apps` keeps the global flag's value.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as JSON")


def add_apps_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "apps",
        help="the published applications and where each version is offered",
        description="Without a subcommand: one line per application version, with the "
        "centers offering it and the state of their canary.",
    )
    p.add_argument("--center", help="only this center's offers")
    _json_flag(p)
    asub = p.add_subparsers(dest="apps_cmd", metavar="{show,put,delete}")
    a = asub.add_parser("show", help="an application: versions, centers, parameters, outputs")
    a.add_argument("name")
    _json_flag(a)
    a = asub.add_parser("put", help="create or replace a definition (admin)")
    a.add_argument("file", metavar="FILE.yaml", help="the definition (YAML or JSON; - for stdin)")
    _json_flag(a)
    a = asub.add_parser("delete", help="remove a definition put through the API (admin)")
    a.add_argument("name")
    _json_flag(a)

    p = sub.add_parser(
        "run",
        help="submit a job of an application",
        description="Submit a job of an application of the catalog. --param values are "
        "typed by its definition (int, float, bool: true/false/yes/no/1/0; the others "
        "strings); exit 2 for an unknown parameter or a value of the wrong type.",
    )
    p.add_argument("app")
    p.add_argument("--version", help="a version of the application (default: the newest offered)")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="a parameter's value (repeat for more)",
    )
    p.add_argument("--center", default="auto", help="center id, or auto (the default)")
    p.add_argument("--name", help="the job's name (default: the application's)")
    p.add_argument("--queue", help="the partition or queue")
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    _json_flag(p)
