"""Signed, expiring bearer tokens: what a verified token grants, and the issuer of the
gateway's own.

The gateway signs JWTs with Ed25519 (EdDSA) keys kept encrypted in the vault
under ``signing/<kid>``. Rotation adds a key that becomes the signing key; older
keys keep verifying until retired, so tokens in flight survive a rotation. The
public keys are served as a JWKS document. Verifying tokens, the gateway's own and
those of external OIDC providers, is gateway/identity/verifier.py.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from gateway.config_models import AuthConfig
from gateway.fields import CENTER_ID_PATTERN, ROLES, USER_PATTERN
from gateway.identity.keyring import GATEWAY_ALGORITHM, Keyring

__all__ = ["IssuedToken", "TokenError", "TokenIssuer", "VerifiedToken", "matches"]


class TokenError(Exception):
    """A token is refused. The message is a reason safe to give the caller (the API
    answers `unauthenticated`); it never holds the token or any part of it."""


@dataclass(frozen=True)
class VerifiedToken:
    user: str
    roles: frozenset[str]
    centers: frozenset[str]
    token_id: str | None
    issuer: str
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: str
    user: str
    roles: tuple[str, ...]
    centers: tuple[str, ...]
    expires_at: datetime
    key_id: str

    def public(self) -> dict[str, Any]:
        """The JSON shape the API and the CLI print: the token and what it grants."""
        return {
            "token": self.token,
            "token_id": self.token_id,
            "user": self.user,
            "roles": list(self.roles),
            "centers": list(self.centers),
            "expires_at": self.expires_at.isoformat(),
            "key_id": self.key_id,
        }


def matches(pattern: str, value: object) -> bool:
    """Whether `value` is a string that `pattern` matches whole."""
    # fullmatch: the patterns end in '$', which alone would let a trailing newline through.
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


class TokenIssuer:
    """Signs tokens for federation users with the keyring's active key."""

    def __init__(self, keyring: Keyring, auth: AuthConfig) -> None:
        self._keyring = keyring
        self._auth = auth

    def issue(
        self,
        user: str,
        roles: Sequence[str],
        centers: Sequence[str] = (),
        ttl: float | None = None,
    ) -> IssuedToken:
        """A signed token. A ValueError's message begins with the field at fault."""
        if not matches(USER_PATTERN, user):
            raise ValueError(
                f"user: {user!r} is not a valid user name (lower-case letter first, then "
                "lower-case letters, digits, '_', '.', '-'; at most 64)"
            )
        role_list = _checked_roles(roles)
        center_list = _checked_centers(centers)
        if "center-admin" in role_list and not center_list:
            raise ValueError("centers: the center-admin role needs at least one center")
        seconds = _checked_ttl(self._auth.default_ttl if ttl is None else ttl, self._auth.max_ttl)

        issued_at = int(time.time())
        expires = issued_at + math.ceil(seconds)
        token_id = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "iss": self._auth.issuer,
            "aud": self._auth.audience,
            "sub": user,
            "roles": list(role_list),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires,
            "jti": token_id,
        }
        if center_list:
            claims["centers"] = list(center_list)
        kid, key = self._keyring.signing_key()
        token = jwt.encode(claims, key, algorithm=GATEWAY_ALGORITHM, headers={"kid": kid})
        return IssuedToken(
            token=token,
            token_id=token_id,
            user=user,
            roles=role_list,
            centers=center_list,
            expires_at=datetime.fromtimestamp(expires, UTC),
            key_id=kid,
        )


def _as_list(values: Sequence[str] | str) -> list[str]:
    # A lone string is one name, not a sequence of one-letter names.
    return [values] if isinstance(values, str) else list(values)


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _checked_roles(roles: Sequence[str]) -> tuple[str, ...]:
    role_list = _as_list(roles)
    if not role_list:
        raise ValueError(f"roles: give at least one of {', '.join(ROLES)}")
    for role in role_list:
        if role not in ROLES:
            raise ValueError(f"roles: {role!r} is not a role; roles are {', '.join(ROLES)}")
    return _unique(role_list)


def _checked_centers(centers: Sequence[str]) -> tuple[str, ...]:
    center_list = _as_list(centers)
    for center in center_list:
        if not matches(CENTER_ID_PATTERN, center):
            raise ValueError(f"centers: {center!r} is not a valid center id")
    return _unique(center_list)


def _checked_ttl(ttl: float, max_ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ValueError(f"ttl: must be a number of seconds, got {ttl!r}")
    if ttl <= 0:
        raise ValueError(f"ttl: must be positive, got {ttl:g}")
    if ttl > max_ttl:
        raise ValueError(f"ttl: {ttl:g}s is longer than the maximum of {max_ttl:g}s")
    return float(ttl)
