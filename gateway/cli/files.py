"""The file commands of `hpcfed` (docs/data.md): ls, put, get, rm, mkdir, checksum,
transfer.

A file at a center is named CENTER:PATH, e.g. `centera:data/in.bin`; the path is
relative to the first of the login's roots at the center, or absolute inside one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import stat as stat_mod
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    bad_file,
    print_json,
    progress_bar,
    show_progress,
)
from gateway.client.core import ClientError, HpcfedClient
from gateway.client.files import sha256_file

_TYPE_CHARS = {"dir": "d", "symlink": "l", "file": "-", "other": "?"}


@dataclasses.dataclass(frozen=True)
class Remote:
    """CENTER:PATH on the command line."""

    center: str
    path: str

    def __str__(self) -> str:
        return f"{self.center}:{self.path}"


def parse_remote(text: str) -> Remote:
    """CENTER:PATH split at its first colon (the path may hold more); an argparse type."""
    center, colon, path = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no center: write CENTER:PATH, e.g. centera:{text}"
        )
    if not center:
        raise argparse.ArgumentTypeError(f"{text!r} names no center before the ':'")
    if "/" in center:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {center!r} is not a center id (write CENTER:PATH)"
        )
    return Remote(center, path)


# ---------------------------------------------------------------- ls


def mode_string(entry: dict[str, Any]) -> str:
    """`drwxr-xr-x` of an entry's type and octal mode ("0755")."""
    try:
        bits = int(str(entry.get("mode") or "0"), 8)
    except ValueError:
        bits = 0
    return _TYPE_CHARS.get(str(entry.get("type")), "?") + stat_mod.filemode(bits)[1:]


def format_entries(entries: list[dict[str, Any]]) -> list[str]:
    """One `ls -l` style line per entry: mode, size, mtime, name (dirs end in '/')."""
    rows = []
    for e in sorted(entries, key=lambda e: str(e.get("name"))):
        name = str(e.get("name") or e.get("path"))
        if e.get("type") == "dir":
            name += "/"
        mtime = str(e.get("mtime") or "-").replace("T", " ").removesuffix("Z")
        rows.append((mode_string(e), str(e.get("size", "-")), mtime, name))
    width = max((len(r[1]) for r in rows), default=0)
    return [f"{mode}  {size:>{width}}  {mtime}  {name}" for mode, size, mtime, name in rows]


async def _default_path(client: HpcfedClient, center: str, path: str) -> str:
    """An empty PATH (`centera:`) is the login's first root."""
    if path:
        return path
    roots = (await client.roots(center))["roots"]
    if not roots:
        raise ClientError(0, "no_roots", f"{center}: this login has no file roots")
    first = roots[0]
    return str(first["path"] if isinstance(first, dict) else first)


async def cmd_ls(client: HpcfedClient, args: argparse.Namespace) -> int:
    remote: Remote = args.remote
    path = await _default_path(client, remote.center, remote.path)
    try:
        listing = await client.ls(remote.center, path)
    except ClientError as exc:
        if exc.code != "not_a_directory":
            raise
        entry = await client.stat(remote.center, path)
        listing = {"path": entry.get("path", path), "entries": [entry]}
    if args.json:
        print_json({"center": remote.center, **listing})
    else:
        for line in format_entries(listing["entries"]):
            print(line)
    return EXIT_OK


# ---------------------------------------------------------------- put, get


def put_target(path: str, local_name: str) -> str:
    """The remote path `put` writes: PATH, or PATH/<local name> when PATH is empty
    (the first root) or ends in '/'."""
    if not path:
        return local_name
    if path.endswith("/"):
        return path + local_name
    return path


def get_target(remote_path: str, local: str | None) -> Path | None:
    """The local file `get` writes (None: stdout). LOCAL defaults to the remote
    file's name; an existing directory gets the file inside it."""
    if local == "-":
        return None
    name = remote_path.rstrip("/").rsplit("/", 1)[-1]
    if local is None:
        if not name or name in (".", ".."):
            raise bad_file(f"{remote_path!r} names no file; give the local file to write")
        return Path(name)
    target = Path(local)
    if target.is_dir():
        if not name:
            raise bad_file(f"{remote_path!r} names no file")
        return target / name
    return target


def _local_file_size(local: Path) -> int:
    if not local.is_file():
        raise bad_file(f"{local}: not a file" if local.exists() else f"{local}: no such file")
    return local.stat().st_size


async def _stat_or_none(client: HpcfedClient, center: str, path: str) -> dict[str, Any] | None:
    try:
        return await client.stat(center, path)
    except ClientError as exc:
        if exc.status == 404:
            return None
        raise


async def cmd_put(client: HpcfedClient, args: argparse.Namespace) -> int:
    local = Path(args.local)
    size = await asyncio.to_thread(_local_file_size, local)
    remote: Remote = args.remote
    center = remote.center
    path = put_target(remote.path, local.name)
    existing = await _stat_or_none(client, center, path)
    if existing is not None and existing.get("type") == "dir":
        path = f"{path.rstrip('/')}/{local.name}"
        existing = await _stat_or_none(client, center, path)
    if args.no_overwrite and existing is not None:
        raise ClientError(0, "file_exists", f"{center}:{path} already exists (--no-overwrite)")
    offset = 0
    if args.resume and existing is not None:
        if existing.get("type") != "file":
            raise bad_file(f"{center}:{path} is a {existing.get('type')}, not a file")
        offset = int(existing["size"])
        if offset > size:
            raise bad_file(
                f"{center}:{path} has {offset} bytes, more than {local} ({size}); "
                "it is not a part of this file: put it again without --resume"
            )
    enabled = show_progress(args)
    with progress_bar(enabled, f"sha256 {local.name}") as bar:
        digest = await sha256_file(local, bar)
    with progress_bar(enabled, f"put {local.name}") as bar:
        try:
            result = await client.upload(
                center,
                path,
                local,
                offset=offset,
                overwrite=not args.no_overwrite,
                sha256=digest,
                progress=bar,
            )
        except ClientError as exc:
            if exc.code == "checksum_mismatch":
                raise ClientError(
                    exc.status,
                    exc.code,
                    f"{center}:{path} differs from {local} once written (sha256 {digest}); "
                    "put it again" + (" without --resume" if args.resume else ""),
                ) from None
            raise
    answer = {"center": center, "local": str(local), "offset": offset, **result}
    answer.setdefault("path", path)
    answer.setdefault("size", size)
    answer.setdefault("sha256", digest)
    if args.json:
        print_json(answer)
    else:
        print(f"{center}:{answer['path']}  {answer['size']} bytes  sha256 {answer['sha256']}")
    return EXIT_OK


async def cmd_get(client: HpcfedClient, args: argparse.Namespace) -> int:
    remote: Remote = args.remote
    target = get_target(remote.path, args.local)
    if target is None:
        if args.resume:
            print("hpcfed get: --resume needs a local file, not stdout (-)", file=sys.stderr)
            return EXIT_USAGE
        out = sys.stdout.buffer
        # Written as it comes; a mismatch found at the end still fails the command.
        await client.download(remote.center, remote.path, out, verify=True)
        out.flush()
        return EXIT_OK
    offset = (
        await asyncio.to_thread(_local_file_size, target) if args.resume and target.exists() else 0
    )
    with progress_bar(show_progress(args), f"get {target.name}") as bar:
        # The sha256 of the whole local file must be the center's, else the file is removed.
        result = await client.download(
            remote.center, remote.path, target, offset=offset, progress=bar, verify=True
        )
    answer = {"center": remote.center, "local": str(target), **result}
    if args.json:
        print_json(answer)
    else:
        resumed = f" (resumed at byte {result['offset']})" if result["offset"] else ""
        print(f"{target}  {result['size']} bytes{resumed}  sha256 {result['sha256']}")
    return EXIT_OK


# ---------------------------------------------------------------- rm, mkdir, checksum


async def cmd_rm(client: HpcfedClient, args: argparse.Namespace) -> int:
    remote: Remote = args.remote
    await client.rm(remote.center, remote.path, recursive=args.recursive)
    if args.json:
        print_json({"center": remote.center, "path": remote.path, "removed": True})
    return EXIT_OK


async def cmd_mkdir(client: HpcfedClient, args: argparse.Namespace) -> int:
    remote: Remote = args.remote
    entry = await client.mkdir(remote.center, remote.path, parents=args.parents)
    if args.json:
        print_json({"center": remote.center, **entry})
    return EXIT_OK


async def cmd_checksum(client: HpcfedClient, args: argparse.Namespace) -> int:
    remote: Remote = args.remote
    result = await client.checksum(remote.center, remote.path)
    if args.json:
        print_json({"center": remote.center, **result})
    else:
        print(f"{result['sha256']}  {remote.center}:{result.get('path', remote.path)}")
    return EXIT_OK


# ---------------------------------------------------------------- transfer


def describe_transfer(transfer: dict[str, Any]) -> str:
    src, dst = transfer.get("source") or {}, transfer.get("destination") or {}
    line = (
        f"{transfer['id']} {transfer['state']}  "
        f"{src.get('center')}:{src.get('path')} -> {dst.get('center')}:{dst.get('path')}  "
        f"{transfer.get('files_done', 0)}/{transfer.get('files_total', '?')} files  "
        f"{transfer.get('bytes_done', 0)}/{transfer.get('bytes_total', '?')} bytes"
    )
    return line


async def cmd_transfer(client: HpcfedClient, args: argparse.Namespace) -> int:
    src: Remote = args.source
    dst: Remote = args.destination
    transfer = await client.transfer(
        src.center, src.path, dst.center, dst.path, overwrite=args.overwrite
    )
    if not args.wait:
        print_json(transfer) if args.json else print(transfer["id"])
        return EXIT_OK
    if not args.json:
        print(f"transfer {transfer['id']}: {src} -> {dst}", file=sys.stderr)
    with progress_bar(show_progress(args), f"transfer {transfer['id'][:8]}") as bar:

        def update(t: dict[str, Any]) -> None:
            total = t.get("bytes_total")
            bar(int(t.get("bytes_done") or 0), int(total) if total is not None else None)

        transfer = await client.wait_transfer(
            transfer["id"], timeout=args.timeout, interval=args.interval, on_update=update
        )
    if args.json:
        print_json(transfer)
    else:
        print(describe_transfer(transfer))
        if transfer.get("error"):
            print(f"hpcfed: transfer {transfer['state']}: {transfer['error']}", file=sys.stderr)
    return EXIT_OK if transfer["state"] == "COMPLETED" else EXIT_FAILED


# ---------------------------------------------------------------- wiring

Command = Callable[[HpcfedClient, argparse.Namespace], Awaitable[int]]


def _local_errors(fn: Command) -> Command:
    """Local file problems (OSError) reported like the gateway's errors."""

    async def wrapped(client: HpcfedClient, args: argparse.Namespace) -> int:
        try:
            return await fn(client, args)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise bad_file(f"{where}{exc.strerror or exc}") from None

    return wrapped


FILE_COMMANDS: dict[str, Command] = {
    name: _local_errors(fn)
    for name, fn in {
        "ls": cmd_ls,
        "put": cmd_put,
        "get": cmd_get,
        "rm": cmd_rm,
        "mkdir": cmd_mkdir,
        "checksum": cmd_checksum,
        "transfer": cmd_transfer,
    }.items()
}


def add_file_parsers(sub: Any) -> None:
    remote_help = "CENTER:PATH (PATH relative to your first root at the center, or absolute)"

    p = sub.add_parser("ls", help="list a directory at a center")
    p.add_argument("remote", metavar="CENTER:PATH", type=parse_remote, help=remote_help)

    p = sub.add_parser("put", help="upload a local file to a center")
    p.add_argument("local", metavar="LOCAL")
    p.add_argument("remote", metavar="CENTER:PATH", type=parse_remote, help=remote_help)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the remote file's size")
    mode.add_argument(
        "--no-overwrite", action="store_true", help="refuse to replace an existing file"
    )

    p = sub.add_parser("get", help="download a file from a center")
    p.add_argument("remote", metavar="CENTER:PATH", type=parse_remote, help=remote_help)
    p.add_argument("local", metavar="LOCAL", nargs="?", help="default: its name; - for stdout")
    p.add_argument("--resume", action="store_true", help="continue from the local file's size")

    p = sub.add_parser("rm", help="remove a file, link or directory at a center")
    p.add_argument("remote", metavar="CENTER:PATH", type=parse_remote, help=remote_help)
    p.add_argument("-r", "--recursive", action="store_true", help="a directory and its contents")

    p = sub.add_parser("mkdir", help="make a directory at a center")
    p.add_argument("remote", metavar="CENTER:PATH", type=parse_remote, help=remote_help)
    p.add_argument("-p", "--parents", action="store_true", help="make parents; exists is fine")

    p = sub.add_parser("checksum", help="sha256 of a file, computed at its center")
    p.add_argument("remote", metavar="CENTER:PATH", type=parse_remote, help=remote_help)

    p = sub.add_parser("transfer", help="copy a file or directory between centers")
    p.add_argument("source", metavar="SRC_CENTER:PATH", type=parse_remote)
    p.add_argument("destination", metavar="DST_CENTER:PATH", type=parse_remote)
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--wait", action="store_true", help="wait for it to end; exit 0 iff COMPLETED")
    p.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)


__all__ = ["FILE_COMMANDS", "Remote", "add_file_parsers", "parse_remote"]
