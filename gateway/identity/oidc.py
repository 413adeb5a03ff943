"""Key sets of external OpenID Connect providers: from a file or a URL, cached,
refetched sparingly.

A provider's JWKS is read from a file (re-read when the file changes) or fetched
over HTTP (trusted for the provider's ``jwks_refresh`` seconds). Only public
signature keys are kept. A key set that cannot be loaded raises `KeySetError`,
whose message is fit for a 401 response; `gateway.identity.verifier.TokenVerifier` turns it
into a `TokenError`. Neither messages nor logs hold key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import jwt

from gateway.config_models import OIDCProvider

__all__ = [
    "JWKS_FETCH_TIMEOUT",
    "RETRY_AFTER_FAILURE",
    "UNKNOWN_KID_REFETCH",
    "JwksFile",
    "JwksUrl",
    "KeySetError",
    "KeySource",
    "ProviderKey",
    "ProviderKeys",
    "key_source",
    "parse_jwks",
    "select_key",
]

log = logging.getLogger("hpcfed.auth")

#: An unknown kid may make the gateway refetch a provider's JWKS at most this often,
#: so tokens with random kids cannot make it hammer the provider.
UNKNOWN_KID_REFETCH = 30.0
#: After a failed JWKS fetch, requests are refused without a new fetch for this long.
RETRY_AFTER_FAILURE = 5.0
JWKS_FETCH_TIMEOUT = 10.0
_MAX_JWKS_BYTES = 1024 * 1024


class KeySetError(Exception):
    """A provider's key set cannot be loaded. The message is a reason safe to send
    with a 401; the details are logged."""


@dataclass(frozen=True)
class ProviderKey:
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


ProviderKeys = dict[str | None, ProviderKey]


def parse_jwks(data: object) -> ProviderKeys:
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
        parsed.key_id: ProviderKey(raw=raw_by_kid[parsed.key_id], parsed=parsed)
        for parsed in key_set.keys
    }
    skipped = [key.get("kid") for key in data["keys"] if isinstance(key, dict)]
    skipped = [kid for kid in skipped if kid not in keys]
    if skipped:
        log.debug("skipped JWKS keys that cannot verify signatures: %s", skipped)
    return keys


def select_key(keys: ProviderKeys, kid: str | None) -> ProviderKey | None:
    """The key with id `kid`; None when there is none."""
    if kid is None and len(keys) == 1:
        return next(iter(keys.values()))  # a provider with one key may leave kid out
    return keys.get(kid)


def _cannot_load(provider: OIDCProvider) -> KeySetError:
    return KeySetError(f"token key set of issuer {provider.issuer} cannot be loaded")


class JwksFile:
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
                self._keys = parse_jwks(json.loads(self._path.read_bytes()))
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


class JwksUrl:
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
            elif (
                select_key(self._keys, kid) is None and now - self._forced_at >= UNKNOWN_KID_REFETCH
            ):
                # The provider may have rotated its keys since the last fetch.
                self._forced_at = now
                with contextlib.suppress(KeySetError):
                    await self._refresh()
            assert self._keys is not None
            return self._keys

    async def _refresh(self) -> None:
        try:
            self._keys = parse_jwks(json.loads(await self._fetch()))
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


KeySource = JwksFile | JwksUrl


def key_source(
    provider: OIDCProvider,
    data_path: Callable[[str], Path],
    session: Callable[[], aiohttp.ClientSession],
) -> KeySource:
    """Where `provider`'s keys come from: its `jwks_file` if set, else its `jwks_url`."""
    if provider.jwks_file is not None:
        return JwksFile(provider, data_path(provider.jwks_file))
    return JwksUrl(provider, session)
