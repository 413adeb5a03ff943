"""Who is calling and what they may do.

A bearer token (signed by this gateway, or by a trusted OpenID Connect
provider; see gateway/identity/verifier.py) becomes a `Principal`: a user, roles, and for
a center-admin the centers they run. Roles grant permissions with a scope:
their own jobs, their centers, or everything. `Principal.owner_filter` narrows
reads to what the principal may see: someone else's job is "not found", so its
existence is not leaked.

`ensure_client_token` keeps a token for the CLI on the gateway's own machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path

from gateway.identity.tokens import TokenError, TokenIssuer, VerifiedToken
from gateway.identity.verifier import TokenVerifier

log = logging.getLogger("hpcfed.auth")


CLIENT_TOKEN_FILE = "client-token"  # noqa: S105 - a file name


class Scope(IntEnum):
    OWN = 1  # the principal's own jobs and files
    CENTER = 2  # what belongs to the centers named in the token
    ALL = 3


_RESEARCHER = {
    "jobs.submit": Scope.OWN,
    "jobs.read": Scope.OWN,
    "jobs.cancel": Scope.OWN,
    "jobs.output": Scope.OWN,
    "centers.read": Scope.ALL,
    # Their own files at each center, as their own login there.
    "files.read": Scope.OWN,
    "files.write": Scope.OWN,
    "transfers.create": Scope.OWN,
    "transfers.read": Scope.OWN,
    "usage.read": Scope.OWN,
}


#: Role -> permission -> scope. docs/security.md renders this table; keep both in step.
ROLE_GRANTS: dict[str, dict[str, Scope]] = {
    "researcher": _RESEARCHER,
    # Metadata of every job and the federation's health; no outputs, no changes.
    "operator": {
        "jobs.read": Scope.ALL,
        "centers.read": Scope.ALL,
        "health.read": Scope.ALL,
        "usage.read": Scope.ALL,
        "metrics.read": Scope.ALL,
    },
    # Their own center's configuration, evaluations and descriptor.
    "center-admin": {"centers.read": Scope.ALL, "centers.admin": Scope.CENTER},
    "admin": {
        permission: Scope.ALL
        for permission in (
            *_RESEARCHER,
            "health.read",
            "metrics.read",
            "centers.admin",
            "apps.admin",
            "tokens.issue",
        )
    },
}


PERMISSIONS = frozenset(p for grants in ROLE_GRANTS.values() for p in grants)


@dataclass(frozen=True)
class Principal:
    user: str
    roles: frozenset[str]
    centers: frozenset[str] = frozenset()
    token_id: str | None = None

    @classmethod
    def from_token(cls, token: VerifiedToken) -> Principal:
        return cls(token.user, token.roles, token.centers, token.token_id)

    def scope(self, permission: str) -> Scope | None:
        scopes = [ROLE_GRANTS[r][permission] for r in self.roles if permission in ROLE_GRANTS[r]]
        return max(scopes, default=None)

    def may(self, permission: str, center: str | None = None) -> bool:
        scope = self.scope(permission)
        if scope is Scope.CENTER:
            return center is not None and center in self.centers
        return scope is not None

    def owner_filter(self, permission: str) -> str | None:
        """None when the principal may act on everyone's jobs, else their own name."""
        return None if self.scope(permission) is Scope.ALL else self.user


#: A client token with less than this left is replaced at start.
_RENEW_BEFORE = timedelta(days=1)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


async def ensure_client_token(
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    path: Path,
    user: str,
    roles: Iterable[str],
    ttl: float,
) -> bool:
    """Keep a valid token for the bootstrap user in `path` (mode 0600) for the CLI on
    this machine. Returns True when a new token was written."""
    wanted = frozenset(roles)
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        current = await verifier.verify(text.strip())
    except (OSError, TokenError):
        current = None
    if (
        current is not None
        and current.user == user
        and current.roles == wanted
        and current.expires_at - datetime.now(UTC) > _RENEW_BEFORE
    ):
        return False
    issued = issuer.issue(user, sorted(wanted), ttl=ttl)
    _write_private(path, issued.token + "\n")
    log.info("wrote a token for %s to %s (expires %s)", user, path, issued.expires_at)
    return True
