"""Verifying bearer tokens: the gateway's own, and access tokens of external OIDC
providers.

Tokens of a configured OIDC provider are verified against its JWKS, read from a
file or fetched over HTTP and cached (see gateway/identity/oidc.py).

Only asymmetric algorithms are accepted: a token with alg "none" or HS* is
refused before any key is looked at, so a public key can never be used as an
HMAC secret. Refusals raise `TokenError` with a reason fit for the caller (the API
answers `unauthenticated`); neither reasons nor logs hold a token or key material.

The gateway's own tokens, once verified, are remembered in a bounded LRU cache
keyed by the exact token string, so that a client sending the same token again
skips the signature check. A cached token is still checked on every request:
its signing key must still be in the keyring (the vault's entries are re-checked:
a vault file on every request, so a retired key refuses its tokens at once; entries
in a shared store every `keyring.STAMP_RECHECK` seconds, so within that) and be the
very key it was verified with, and exp, nbf and iat must still hold with the
configured leeway. When any of these fails the entry is dropped and the token is
verified afresh, so the answer (and the reason of a refusal) is the one an uncached check gives.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.config_models import AuthConfig, OIDCProvider
from gateway.fields import CENTER_ID_PATTERN, ROLES, USER_PATTERN
from gateway.identity.keyring import GATEWAY_ALGORITHM, Keyring
from gateway.identity.oidc import KeySetError, KeySource, key_source, select_key
from gateway.identity.tokens import TokenError, VerifiedToken, matches

__all__ = ["TOKEN_CACHE_SIZE", "TokenVerifier"]

# Reasons for refusals, shared by the checks that raise them.
_MALFORMED = "token is malformed"
_BAD_ALGORITHM = "token is not signed with an accepted algorithm"
_BAD_SIGNATURE = "token signature does not verify"
_UNKNOWN_KID = "token key id is unknown"
_UNTRUSTED_ISSUER = "token issuer is not trusted"

#: How many verified tokens of the gateway's own the verifier remembers.
TOKEN_CACHE_SIZE = 4096


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
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": require},
        )
        _check_times(claims)
        return claims
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
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
        reason = _MALFORMED
    raise TokenError(reason)


#: The range a time claim may take: the Unix epoch to the end of year 9999, the
#: span of a datetime, so no later conversion of it can overflow.
MAX_TIME_CLAIM = 253_402_300_799


def _check_times(claims: dict[str, Any]) -> None:
    """exp, nbf and iat, where present, are finite numbers of seconds in range."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= MAX_TIME_CLAIM  # also refuses NaN
        ):
            raise TokenError(f"token claim '{name}' is not a time between 1970 and 9999")


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
    return frozenset(c for c in _string_list(value) if matches(CENTER_ID_PATTERN, c))


@dataclass(frozen=True)
class _CachedToken:
    """A verified token of the gateway's own and what must still hold for it."""

    verified: VerifiedToken
    kid: str
    key: Ed25519PublicKey
    #: Integer claims, as PyJWT compares them.
    expires: int
    not_before: int | None
    issued_at: int | None


def _int_claim(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    return None if value is None else int(value)


class TokenVerifier:
    """Verifies the gateway's own tokens and those of configured OIDC providers."""

    def __init__(
        self,
        keyring: Keyring,
        auth: AuthConfig,
        data_path: Callable[[str], Path],
        *,
        cache_size: int = TOKEN_CACHE_SIZE,
    ) -> None:
        self._keyring = keyring
        self._auth = auth
        self._cache: OrderedDict[str, _CachedToken] = OrderedDict()
        self._cache_size = cache_size
        self._http: aiohttp.ClientSession | None = None
        self._providers: dict[str, tuple[OIDCProvider, KeySource]] = {}
        for provider in auth.oidc:
            if provider.issuer in self._providers:
                continue  # the first provider configured for an issuer wins
            self._providers[provider.issuer] = (
                provider,
                key_source(provider, data_path, self._session),
            )

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
        cached = self._cached(token)
        if cached is not None:
            return cached
        header, issuer = _route(token)
        if issuer == self._auth.issuer:
            return self._verify_own(token, header)
        entry = self._providers.get(issuer)
        if entry is None:
            raise TokenError(_UNTRUSTED_ISSUER)
        provider, source = entry
        return await self._verify_oidc(token, header, provider, source)

    def _cached(self, token: str) -> VerifiedToken | None:
        """The cached verification of `token` if everything it rests on still holds."""
        entry = self._cache.get(token)
        if entry is None:
            return None
        # public_keys() re-reads the keyring when the vault changed: a retired
        # (or replaced) key no longer yields the key object the token was verified with.
        if self._keyring.public_keys().get(entry.kid) is not entry.key or not self._in_time(entry):
            del self._cache[token]
            return None
        self._cache.move_to_end(token)
        return entry.verified

    def _in_time(self, entry: _CachedToken) -> bool:
        """The time checks PyJWT makes on exp, nbf and iat, with the same leeway."""
        now = time.time()
        leeway = self._auth.leeway
        if entry.expires <= now - leeway:
            return False
        if entry.not_before is not None and entry.not_before > now + leeway:
            return False
        return entry.issued_at is None or entry.issued_at <= now + leeway

    def _remember(self, token: str, entry: _CachedToken) -> None:
        self._cache[token] = entry
        self._cache.move_to_end(token)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _verify_own(self, token: str, header: dict[str, Any]) -> VerifiedToken:
        if header["alg"] != GATEWAY_ALGORITHM:
            raise TokenError(_BAD_ALGORITHM)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token has no key id")
        # A kid not known here may be a key rotated in since the keys were last read.
        key = self._keyring.public_keys(unknown=kid).get(kid)
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
        if not matches(USER_PATTERN, user):
            raise TokenError("token subject is not a valid user name")
        verified = VerifiedToken(
            user=user,
            roles=_known_roles(claims.get("roles")),
            centers=_valid_centers(claims.get("centers")),
            token_id=_token_id(claims),
            issuer=self._auth.issuer,
            expires_at=_expiry(claims),
        )
        if self._cache_size > 0:
            self._remember(
                token,
                _CachedToken(
                    verified=verified,
                    kid=kid,
                    key=key,
                    expires=int(claims["exp"]),
                    not_before=_int_claim(claims, "nbf"),
                    issued_at=_int_claim(claims, "iat"),
                ),
            )
        return verified

    async def _verify_oidc(
        self,
        token: str,
        header: dict[str, Any],
        provider: OIDCProvider,
        source: KeySource,
    ) -> VerifiedToken:
        alg = header["alg"]
        if alg not in provider.algorithms:
            raise TokenError(_BAD_ALGORITHM)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError(_MALFORMED)
        try:
            keys = await source.keys(kid)
        except KeySetError as exc:
            raise TokenError(str(exc)) from None  # same reason as the key set's
        found = select_key(keys, kid)
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
        if not matches(USER_PATTERN, user):
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
