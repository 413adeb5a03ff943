"""Administration commands run on the gateway host: tokens, signing keys, the vault,
the audit log. They work on the files the config names (no running gateway is
needed; a running one sees the changes at once) and each change is audited.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Refused(Exception):
    """A command that cannot be done as asked; the message is for the admin."""


def _default_config() -> str:
    return os.environ.get("HPCFED_CONFIG", "configs/gateway.yaml")


def _config(args: argparse.Namespace) -> Any:
    from gateway.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise _Refused(str(exc)) from None


def _ensure_schema(stores: Any) -> None:
    """What a gateway's start does first (migrate, or refuse the schema), so that a
    command run before any gateway started finds the store's tables."""
    import asyncio

    from gateway.store.contract import StoreError

    async def ensure() -> None:
        if stores.shared is not None:
            await stores.shared.open()
        try:
            await stores.migrator.ensure(stores.migrate)
        finally:
            if stores.shared is not None:
                await stores.shared.close()

    try:
        asyncio.run(ensure())
    except StoreError as exc:
        raise _Refused(str(exc)) from None


def _context(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(config, vault, audit trail) for the config the command names, kept where its
    `store` keeps them (the files of the embedded store, or PostgreSQL)."""
    from gateway.identity.vault import Vault, VaultError
    from gateway.store import open_stores

    config = _config(args)
    stores = open_stores(config)
    _ensure_schema(stores)
    try:
        vault = Vault.open(
            config.gateway.vault, config.data_path, create=True, entries=stores.vault
        )
    except VaultError as exc:
        raise _Refused(str(exc)) from None
    return config, vault, stores.audit


def _audit(audit: Any, action: str, outcome: str = "ok", **fields: Any) -> None:
    audit.record(
        action=action, actor=f"local:{getpass.getuser()}", outcome=outcome, source="cli", **fields
    )


def _run(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except _Refused as exc:
            print(f"hpcfed: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return wrapped


# ---------------------------------------------------------------- tokens


@_run
def cmd_token(args: argparse.Namespace) -> int:
    from gateway.identity.keyring import Keyring
    from gateway.identity.tokens import TokenIssuer
    from gateway.units import parse_duration_seconds

    config, vault, audit = _context(args)
    keyring = Keyring(vault)
    try:
        if args.subcommand == "issue":
            try:
                ttl = parse_duration_seconds(args.ttl) if args.ttl else None
            except ValueError as exc:
                raise _Refused(f"--ttl: {exc}") from None
            keyring.ensure()
            try:
                issued = TokenIssuer(keyring, config.gateway.auth).issue(
                    args.user, args.role, args.center or (), ttl
                )
            except ValueError as exc:
                _audit(audit, "tokens.issue", "refused", target={"user": args.user}, error=str(exc))
                raise _Refused(str(exc)) from None
            _audit(
                audit,
                "tokens.issue",
                target={"user": issued.user, "token_id": issued.token_id},
                roles_granted=list(issued.roles),
                expires_at=issued.expires_at.isoformat(),
            )
            if args.json:
                print(json.dumps(issued.public(), indent=2))
            else:
                print(issued.token)
                print(
                    f"token {issued.token_id} for {issued.user} ({', '.join(issued.roles)}), "
                    f"expires {issued.expires_at:%Y-%m-%d %H:%M:%S} UTC",
                    file=sys.stderr,
                )
        elif args.subcommand == "rotate-key":
            keyring.ensure()  # rotating away from nothing still leaves an old and a new key
            kid = keyring.rotate()
            _audit(audit, "tokens.rotate_key", target={"key_id": kid})
            print(f"new signing key {kid} is active; older keys verify until retired")
        elif args.subcommand == "retire-key":
            keyring.retire(args.kid)
            _audit(audit, "tokens.retire_key", target={"key_id": args.kid})
            print(f"signing key {args.kid} retired: tokens it signed no longer verify")
        else:  # keys
            keyring.ensure()
            for info in keyring.keys():
                mark = "active" if info.active else "verify-only"
                print(f"{info.kid}  {info.created:%Y-%m-%d %H:%M:%S}  {mark}")
    except ValueError as exc:  # from the keyring: unknown or last key
        raise _Refused(str(exc)) from None
    return EXIT_OK


# ---------------------------------------------------------------- vault


@_run
def cmd_vault(args: argparse.Namespace) -> int:
    from adapters.transport.keys import parse_private_key
    from gateway.fields import LOGIN_PATTERN
    from gateway.identity.vault import ssh_key_name

    config, vault, audit = _context(args)
    if args.vault_cmd == "add-key":
        if args.center not in config.centers:
            raise _Refused(f"--center: no center named {args.center!r} in {args.config}")
        center = config.centers[args.center]
        if not center.center_type.needs_ssh:
            raise _Refused(f"--center: {args.center} is {center.type}; it runs jobs without SSH")
        try:
            data = Path(args.key_file).read_bytes()
        except OSError as exc:
            raise _Refused(f"--key-file: cannot read {args.key_file}: {exc.strerror}") from None
        try:
            key = parse_private_key(data)
        except Exception as exc:  # never echo the file's content
            raise _Refused(
                f"--key-file: {args.key_file} is not an unencrypted OpenSSH or PEM private "
                f"key ({type(exc).__name__})"
            ) from None
        if not re.match(LOGIN_PATTERN, args.login):
            raise _Refused(f"--login: {args.login!r} is not a valid login name")
        name = ssh_key_name(args.center, args.login)
        vault.put(name, data, fingerprint=key.fingerprint, type=key.get_name())
        _audit(
            audit,
            "vault.add_key",
            target={"center": args.center, "login": args.login},
            fingerprint=key.fingerprint,
        )
        print(f"stored {key.get_name()} key {key.fingerprint} as {name}")
        if args.remove_source:
            Path(args.key_file).unlink()
            print(f"removed {args.key_file}")
    elif args.vault_cmd == "remove":
        name = ssh_key_name(args.center, args.login)
        if not vault.remove(name):
            raise _Refused(f"the vault has no entry {name}")
        _audit(audit, "vault.remove_key", target={"center": args.center, "login": args.login})
        print(f"removed {name}")
    else:  # list
        for name in vault.names():
            info = vault.info(name)
            extra = " ".join(f"{k}={v}" for k, v in sorted(info.meta.items()))
            print(f"{name}  {info.created:%Y-%m-%d %H:%M:%S}  {extra}".rstrip())
    return EXIT_OK


# ---------------------------------------------------------------- audit


@_run
def cmd_audit(args: argparse.Namespace) -> int:
    from gateway.identity.audit import AuditError
    from gateway.store import open_stores
    from gateway.store.contract import StoreError

    audit = open_stores(_config(args)).audit
    try:
        entries = audit.entries()
    except (AuditError, StoreError, ValueError) as exc:
        raise _Refused(f"audit log: {exc}") from None
    finally:
        audit.close()
    for entry in entries[-args.tail :] if args.tail else entries:
        if args.json:
            print(json.dumps(entry, sort_keys=True))
            continue
        target = ",".join(f"{k}={v}" for k, v in (entry.get("target") or {}).items())
        print(
            f"{entry.get('time')}  {entry.get('actor') or '-'}  {entry.get('action')}  "
            f"{target or '-'}  {entry.get('outcome')}"
            + (f" ({entry['error']})" if entry.get("error") else "")
        )
    return EXIT_OK


# ---------------------------------------------------------------- the database


@_run
def cmd_db(args: argparse.Namespace) -> int:
    """`db status`: the schema's version against this gateway's; `db migrate`: apply
    what is pending (what a start with `store.migrate: auto` does)."""
    import asyncio

    from gateway.store import open_stores
    from gateway.store.contract import StoreError

    stores = open_stores(_config(args))

    async def run() -> Any:
        if stores.shared is not None:
            await stores.shared.open()
        try:
            if args.db_cmd == "migrate":
                before = await stores.migrator.status()
                return before, await stores.migrator.migrate()
            return None, await stores.migrator.status()
        finally:
            if stores.shared is not None:
                await stores.shared.close()

    try:
        before, status = asyncio.run(run())
    except StoreError as exc:
        raise _Refused(str(exc)) from None
    finally:
        stores.audit.close()
    if args.json:
        print(
            json.dumps(
                {
                    "backend": status.backend,
                    "current": status.current,
                    "known": status.known,
                    "applied": [
                        {"version": m.version, "name": m.name, "applied_at": str(m.applied_at)}
                        for m in status.applied
                    ],
                    "pending": [{"version": m.version, "name": m.name} for m in status.pending],
                }
            )
        )
    else:
        for m in status.applied:
            print(f"{m.version:>4}  applied {m.applied_at:%Y-%m-%d %H:%M:%S}  {m.name}")
        for m in status.pending:
            print(f"{m.version:>4}  pending                      {m.name}")
        if before is not None:
            done = len(before.pending) - len(status.pending)
            print(f"applied {done} migration(s)")
        state = (
            "newer than this gateway knows"
            if status.too_new
            else ("up to date" if not status.pending else f"{len(status.pending)} pending")
        )
        print(
            f"{status.backend} schema at version {status.current} "
            f"(this gateway knows {status.known}): {state}"
        )
    if status.too_new:
        return EXIT_FAILED
    return EXIT_OK


ADMIN_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "token": cmd_token,
    "vault": cmd_vault,
    "audit": cmd_audit,
    "db": cmd_db,
}


def add_admin_parsers(sub: Any) -> None:
    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", default=_default_config(), help="the gateway's config")
        return p

    p = sub.add_parser("token", help="issue tokens; rotate and retire signing keys (admin)")
    tsub = p.add_subparsers(dest="subcommand", required=True)
    t = with_config(tsub.add_parser("issue", help="print a signed token for a user"))
    t.add_argument("--user", required=True)
    t.add_argument(
        "--role",
        action="append",
        required=True,
        help="researcher, operator, center-admin or admin; repeatable",
    )
    t.add_argument("--center", action="append", help="for center-admin; repeatable")
    t.add_argument("--ttl", help="lifetime, e.g. 8h or 30m (default: auth.default_ttl)")
    with_config(tsub.add_parser("keys", help="list signing keys"))
    with_config(tsub.add_parser("rotate-key", help="make a new signing key the active one"))
    t = with_config(tsub.add_parser("retire-key", help="stop accepting tokens of a key"))
    t.add_argument("kid")

    p = sub.add_parser("vault", help="SSH keys of center logins, kept encrypted (admin)")
    vsub = p.add_subparsers(dest="vault_cmd", required=True)
    v = with_config(vsub.add_parser("add-key", help="store a login's private key"))
    v.add_argument("--center", required=True)
    v.add_argument("--login", required=True)
    v.add_argument("--key-file", required=True)
    v.add_argument("--remove-source", action="store_true", help="delete the file once stored")
    v = with_config(vsub.add_parser("remove", help="delete a login's key"))
    v.add_argument("--center", required=True)
    v.add_argument("--login", required=True)
    with_config(vsub.add_parser("list", help="entries (names and dates; never secrets)"))

    p = sub.add_parser("db", help="the store's schema: its version, its migrations (admin)")
    dsub = p.add_subparsers(dest="db_cmd", required=True)
    for name, text in (
        ("status", "the schema's version, what is applied and what is pending"),
        ("migrate", "apply the pending migrations (safe while replicas run)"),
    ):
        d = with_config(dsub.add_parser(name, help=text))
        d.add_argument("--json", action="store_true", help="as one JSON document")

    p = with_config(sub.add_parser("audit", help="show the audit log (admin)"))
    p.add_argument("--tail", type=int, help="only the last N entries")
