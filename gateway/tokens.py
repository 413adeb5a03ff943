"""Signed, expiring bearer tokens, and access tokens of external OIDC providers.

The gateway signs JWTs with Ed25519 (EdDSA) keys kept encrypted in the vault
under ``signing/<kid>``. Rotation adds a key that becomes the signing key; older
keys keep verifying until retired, so tokens in flight survive a rotation. The
public keys are served as a JWKS document.

Tokens of a configured OIDC provider are verified against its JWKS, read from a
file or fetched over HTTP and cached.

Only asymmetric algorithms are accepted: a token with alg "none" or HS* is
refused before any key is looked at, so a public key can never be used as an
HMAC secret. Refusals raise `TokenError` with a reason fit for a 401 response;
neither reasons nor logs hold a token or key material.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.models import CENTER_ID_PATTERN, ROLES, USER_PATTERN, AuthConfig, OIDCProvider
from gateway.vault import SIGNING_PREFIX, Vault, VaultError

__all__ = [
    "IssuedToken",
    "Keyring",
    "SigningKeyInfo",
    "TokenError",
    "TokenIssuer",
    "TokenVerifier",
    "VerifiedToken",
]

log = logging.getLogger("hpcfed.auth")

GATEWAY_ALGORITHM = "EdDSA"
_KID_ALPHABET = string.ascii_lowercase + string.digits  # vault names are lower case
_KID_LENGTH = 12
#: An unknown kid may make the gateway refetch a provider's JWKS at most this often,
#: so tokens with random kids cannot make it hammer the provider.
UNKNOWN_KID_REFETCH = 30.0
#: After a failed JWKS fetch, requests are refused without a new fetch for this long.
RETRY_AFTER_FAILURE = 5.0
JWKS_FETCH_TIMEOUT = 10.0
_MAX_JWKS_BYTES = 1024 * 1024

# Reasons for refusals, shared by the checks that raise them.
_MALFORMED = "token is malformed"
_BAD_ALGORITHM = "token is not signed with an accepted algorithm"
_BAD_SIGNATURE = "token signature does not verify"
_UNKNOWN_KID = "token key id is unknown"
_UNTRUSTED_ISSUER = "token issuer is not trusted"


class TokenError(Exception):
    """A token is refused. The message is a reason safe to send with a 401; it never
    holds the token or any part of it."""


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


@dataclass(frozen=True)
class SigningKeyInfo:
    kid: str
    created: datetime
    active: bool


def _matches(pattern: str, value: object) -> bool:
    # fullmatch: the patterns end in '$', which alone would let a trailing newline through.
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------- keyring


class Keyring:
    """The gateway's Ed25519 signing keys, encrypted in the vault.

    The active key is the newest. Private keys are decrypted for each signature
    and not kept; public keys are cached until the vault file changes.
    """

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._public: dict[str, Ed25519PublicKey] = {}
        self._public_stamp: tuple[int, int] | None = None
        self._public_loaded = False

    def _created(self, name: str) -> datetime:
        info = self._vault.info(name)
        try:
            return datetime.fromisoformat(info.meta["created"])
        except (KeyError, ValueError):
            return info.created

    def _newest_first(self) -> list[tuple[str, datetime]]:
        """(kid, created) of every key, newest first."""
        keys = [
            (name.removeprefix(SIGNING_PREFIX), self._created(name))
            for name in self._vault.names(SIGNING_PREFIX)
        ]
        return sorted(keys, key=lambda item: (item[1], item[0]), reverse=True)

    def _create(self) -> str:
        existing = self._newest_first()
        created = datetime.now(UTC)
        if existing and created <= existing[0][1]:
            # Keep "newest" unambiguous even if the clock is coarse or stepped back.
            created = existing[0][1] + timedelta(microseconds=1)
        kid = "".join(secrets.choice(_KID_ALPHABET) for _ in range(_KID_LENGTH))
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._vault.put(
            SIGNING_PREFIX + kid, pem, created=created.isoformat(), algorithm=GATEWAY_ALGORITHM
        )
        log.info("created signing key %s", kid)
        return kid

    def ensure(self) -> str:
        """The active kid, creating the first key if there is none."""
        keys = self._newest_first()
        return keys[0][0] if keys else self._create()

    def rotate(self) -> str:
        """Create a key that becomes the active one; older keys still verify."""
        return self._create()

    def retire(self, kid: str) -> None:
        """Remove key `kid`: tokens it signed stop verifying."""
        kids = [k for k, _ in self._newest_first()]
        if kid not in kids:
            raise ValueError(f"no signing key with kid {kid!r}")
        if len(kids) == 1:
            raise ValueError(
                f"signing key {kid} is the only one; rotate first so that a key remains"
            )
        self._vault.remove(SIGNING_PREFIX + kid)
        log.info("retired signing key %s", kid)

    def keys(self) -> list[SigningKeyInfo]:
        """All signing keys, newest (the active one) first."""
        return [
            SigningKeyInfo(kid=kid, created=created, active=i == 0)
            for i, (kid, created) in enumerate(self._newest_first())
        ]

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        """The active kid and its private key, decrypted for this use only."""
        kid = self.ensure()
        return kid, self._private(kid)

    def _private(self, kid: str) -> Ed25519PrivateKey:
        pem = self._vault.get(SIGNING_PREFIX + kid)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise VaultError(f"vault: entry {SIGNING_PREFIX}{kid} is not an Ed25519 private key")
        return key

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """kid -> public key; recomputed only when the vault file has changed."""
        stamp = self._vault.stamp()
        if not self._public_loaded or stamp != self._public_stamp:
            public: dict[str, Ed25519PublicKey] = {}
            for kid, _ in self._newest_first():
                try:
                    public[kid] = self._private(kid).public_key()
                except VaultError as exc:
                    # One unreadable key must not stop tokens of the others verifying.
                    log.warning("signing key %s is not usable: %s", kid, exc)
            self._public, self._public_stamp, self._public_loaded = public, stamp, True
        return dict(self._public)

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWKS document."""
        keys = []
        for kid, key in self.public_keys().items():
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            keys.append(
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(raw),
                    "kid": kid,
                    "alg": GATEWAY_ALGORITHM,
                    "use": "sig",
                }
            )
        return {"keys": keys}


# ---------------------------------------------------------------- issuing


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
        if not _matches(USER_PATTERN, user):
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
        if not _matches(CENTER_ID_PATTERN, center):
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


# ---------------------------------------------------------------- provider keys


@dataclass(frozen=True)
class _ProviderKey:
    raw: dict[str, Any]
    parsed: jwt.PyJWK

    def for_algorithm(self, alg: str) -> jwt.PyJWK | None:
        """The key to verify an `alg` token with; None when it cannot be used for `alg`."""
        if self.parsed.algorithm_name == alg:
            return self.parsed
        if "alg" in self.raw:
            return None  # the provider pinned this key to another algorithm
        # No "alg": PyJWK guessed one (RS256 for any RSA key), but PS256 is as valid.
        try:
            return jwt.PyJWK(self.raw, alg)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            return None


ProviderKeys = dict[str | None, _ProviderKey]


def _parse_jwks(data: object) -> ProviderKeys:
    """The signature keys of a JWKS document, by kid. ValueError when none is usable."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS document (an object with a 'keys' list)")
    raw_by_kid: dict[str | None, dict[str, Any]] = {}
    for key in data["keys"]:
        # Public signature keys only: a symmetric ('oct') key has no place in a JWKS.
        # The first key of a kid wins, so each parsed key pairs with one raw key.
        if isinstance(key, dict) and key.get("kty") != "oct" and key.get("use", "sig") == "sig":
            raw_by_kid.setdefault(key.get("kid"), key)
    try:
        key_set = jwt.PyJWKSet.from_dict({"keys": list(raw_by_kid.values())})
    except jwt.PyJWTError:
        raise ValueError("holds no usable signature key") from None
    keys: ProviderKeys = {
        parsed.key_id: _ProviderKey(raw=raw_by_kid[parsed.key_id], parsed=parsed)
        for parsed in key_set.keys
    }
    skipped = [key.get("kid") for key in data["keys"] if isinstance(key, dict)]
    skipped = [kid for kid in skipped if kid not in keys]
    if skipped:
        log.debug("skipped JWKS keys that cannot verify signatures: %s", skipped)
    return keys


def _select(keys: ProviderKeys, kid: str | None) -> _ProviderKey | None:
    if kid is None and len(keys) == 1:
        return next(iter(keys.values()))  # a provider with one key may leave kid out
    return keys.get(kid)


def _cannot_load(provider: OIDCProvider) -> TokenError:
    return TokenError(f"token key set of issuer {provider.issuer} cannot be loaded")


class _JwksFile:
    """A provider's JWKS in a file, re-read when the file changes."""

    def __init__(self, provider: OIDCProvider, path: Path) -> None:
        self._provider = provider
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: ProviderKeys | None = None
        self._warned: tuple[tuple[int, int] | None, str] | None = None

    async def keys(self, kid: str | None) -> ProviderKeys:
        return self._load()

    def _load(self) -> ProviderKeys:
        try:
            st = os.stat(self._path)
        except OSError as exc:
            self._stamp, self._keys = None, None
            self._fail(None, f"cannot read it: {exc.strerror}")
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._stamp, self._keys = stamp, None
            try:
                self._keys = _parse_jwks(json.loads(self._path.read_bytes()))
            except OSError as exc:
                self._stamp = None  # a read error may pass: try again next time
                self._fail(stamp, f"cannot read it: {exc.strerror}")
            except ValueError as exc:
                self._fail(stamp, f"not a usable JWKS: {exc}")
            self._warned = None
        if self._keys is None:
            raise _cannot_load(self._provider)
        return self._keys

    def _fail(self, stamp: tuple[int, int] | None, reason: str) -> NoReturn:
        # Warn once per state of the file, not on every request.
        if self._warned != (stamp, reason):
            self._warned = (stamp, reason)
            log.warning(
                "OIDC issuer %s: key set file %s: %s", self._provider.issuer, self._path, reason
            )
        raise _cannot_load(self._provider)


class _JwksUrl:
    """A provider's JWKS fetched over HTTP, trusted for `jwks_refresh` seconds."""

    def __init__(
        self, provider: OIDCProvider, session: Callable[[], aiohttp.ClientSession]
    ) -> None:
        assert provider.jwks_url is not None
        self._provider = provider
        self._url = provider.jwks_url
        self._session = session
        self._keys: ProviderKeys | None = None
        self._fetched_at = -math.inf
        self._forced_at = -math.inf
        self._failed_at = -math.inf
        self._lock = asyncio.Lock()

    async def keys(self, kid: str | None) -> ProviderKeys:
        async with self._lock:  # concurrent requests share one fetch
            now = time.monotonic()
            if self._keys is None or now - self._fetched_at >= self._provider.jwks_refresh:
                if now - self._failed_at < RETRY_AFTER_FAILURE:
                    raise _cannot_load(self._provider)
                await self._refresh()
            elif _select(self._keys, kid) is None and now - self._forced_at >= UNKNOWN_KID_REFETCH:
                # The provider may have rotated its keys since the last fetch.
                self._forced_at = now
                with contextlib.suppress(TokenError):
                    await self._refresh()
            assert self._keys is not None
            return self._keys

    async def _refresh(self) -> None:
        try:
            self._keys = _parse_jwks(json.loads(await self._fetch()))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._failed_at = time.monotonic()
            reason = str(exc) or type(exc).__name__
            log.warning(
                "OIDC issuer %s: cannot load key set from %s: %s",
                self._provider.issuer,
                self._url,
                reason,
            )
            raise _cannot_load(self._provider) from None
        self._fetched_at = time.monotonic()

    async def _fetch(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=JWKS_FETCH_TIMEOUT)
        async with self._session().get(self._url, timeout=timeout) as response:
            if response.status != 200:
                raise ValueError(f"HTTP status {response.status}")
            body = b""
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > _MAX_JWKS_BYTES:
                    raise ValueError(f"response is larger than {_MAX_JWKS_BYTES} bytes")
            return body


# ---------------------------------------------------------------- verifying


def _decode(
    token: str,
    key: Ed25519PublicKey | jwt.PyJWK,
    *,
    algorithm: str,
    audience: str,
    issuer: str,
    leeway: float,
    require: list[str],
) -> dict[str, Any]:
    """The verified claims; every PyJWT refusal becomes a TokenError with a safe reason."""
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": require},
        )
    except jwt.ExpiredSignatureError:
        reason = "token has expired"
    except jwt.ImmatureSignatureError:
        reason = "token is not yet valid"
    except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
        reason = _BAD_SIGNATURE
    except jwt.InvalidAudienceError:
        reason = "token audience is not accepted"
    except jwt.InvalidIssuerError:
        reason = _UNTRUSTED_ISSUER
    except jwt.MissingRequiredClaimError as exc:
        reason = f"token is missing claim '{exc.claim}'"
    except jwt.InvalidAlgorithmError:
        reason = _BAD_ALGORITHM
    except (jwt.PyJWTError, ValueError, TypeError):
        reason = _MALFORMED
    raise TokenError(reason)


def _expiry(claims: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(float(claims["exp"]), UTC)


def _string_list(value: object) -> list[str]:
    """A claim holding names: a list of strings or one space-separated string."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _known_roles(value: object) -> frozenset[str]:
    return frozenset(role for role in _string_list(value) if role in ROLES)


def _valid_centers(value: object) -> frozenset[str]:
    return frozenset(c for c in _string_list(value) if _matches(CENTER_ID_PATTERN, c))


class TokenVerifier:
    """Verifies the gateway's own tokens and those of configured OIDC providers."""

    def __init__(
        self, keyring: Keyring, auth: AuthConfig, data_path: Callable[[str], Path]
    ) -> None:
        self._keyring = keyring
        self._auth = auth
        self._http: aiohttp.ClientSession | None = None
        self._providers: dict[str, tuple[OIDCProvider, _JwksFile | _JwksUrl]] = {}
        for provider in auth.oidc:
            if provider.issuer in self._providers:
                continue  # the first provider configured for an issuer wins
            source: _JwksFile | _JwksUrl
            if provider.jwks_file is not None:
                source = _JwksFile(provider, data_path(provider.jwks_file))
            else:
                source = _JwksUrl(provider, self._session)
            self._providers[provider.issuer] = (provider, source)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def verify(self, token: str) -> VerifiedToken:
        """Who the token is for and what it grants; TokenError when it is refused."""
        header, issuer = _route(token)
        if issuer == self._auth.issuer:
            return self._verify_own(token, header)
        entry = self._providers.get(issuer)
        if entry is None:
            raise TokenError(_UNTRUSTED_ISSUER)
        provider, source = entry
        return await self._verify_oidc(token, header, provider, source)

    def _verify_own(self, token: str, header: dict[str, Any]) -> VerifiedToken:
        if header["alg"] != GATEWAY_ALGORITHM:
            raise TokenError(_BAD_ALGORITHM)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token has no key id")
        key = self._keyring.public_keys().get(kid)
        if key is None:
            raise TokenError(_UNKNOWN_KID)
        claims = _decode(
            token,
            key,
            algorithm=GATEWAY_ALGORITHM,
            audience=self._auth.audience,
            issuer=self._auth.issuer,
            leeway=self._auth.leeway,
            require=["exp", "iss", "aud", "sub"],
        )
        user = claims["sub"]
        if not _matches(USER_PATTERN, user):
            raise TokenError("token subject is not a valid user name")
        return VerifiedToken(
            user=user,
            roles=_known_roles(claims.get("roles")),
            centers=_valid_centers(claims.get("centers")),
            token_id=_token_id(claims),
            issuer=self._auth.issuer,
            expires_at=_expiry(claims),
        )

    async def _verify_oidc(
        self,
        token: str,
        header: dict[str, Any],
        provider: OIDCProvider,
        source: _JwksFile | _JwksUrl,
    ) -> VerifiedToken:
        alg = header["alg"]
        if alg not in provider.algorithms:
            raise TokenError(_BAD_ALGORITHM)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError(_MALFORMED)
        found = _select(await source.keys(kid), kid)
        if found is None:
            raise TokenError(_UNKNOWN_KID)
        key = found.for_algorithm(alg)
        if key is None:
            raise TokenError(_BAD_ALGORITHM)
        claims = _decode(
            token,
            key,
            algorithm=alg,
            audience=provider.audience,
            issuer=provider.issuer,
            leeway=self._auth.leeway,
            require=["exp", "iss", "aud"],
        )
        user = claims.get(provider.user_claim)
        if not _matches(USER_PATTERN, user):
            raise TokenError(
                f"token user claim '{provider.user_claim}' is missing or not a valid user name"
            )
        roles = _known_roles(claims.get(provider.roles_claim)) or frozenset(provider.default_roles)
        return VerifiedToken(
            user=user,
            roles=roles,
            centers=_valid_centers(claims.get(provider.centers_claim)),
            token_id=_token_id(claims),
            issuer=provider.issuer,
            expires_at=_expiry(claims),
        )


def _token_id(claims: dict[str, Any]) -> str | None:
    jti = claims.get("jti")
    return jti if isinstance(jti, str) else None


def _route(token: str) -> tuple[dict[str, Any], str]:
    """The unverified header and issuer, read only to choose the keys to verify with.

    Unsigned and HMAC tokens are refused here, before any key is looked at.
    """
    if not isinstance(token, str) or not token:
        raise TokenError(_MALFORMED)
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise TokenError(_MALFORMED) from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or alg.upper().startswith("HS"):
        raise TokenError(_BAD_ALGORITHM)
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        raise TokenError(_MALFORMED) from None
    issuer = claims.get("iss")
    if issuer is None:
        raise TokenError("token is missing claim 'iss'")
    if not isinstance(issuer, str):
        raise TokenError(_MALFORMED)
    return header, issuer
