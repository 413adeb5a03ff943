"""The verifier's cache of the gateway's own verified tokens: a repeated token skips
the signature check, yet expiry, key retirement and the cache's bound still hold."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import jwt
import jwt.api_jwt
import pytest

import gateway.identity.verifier
from gateway.config_models import AuthConfig, VaultConfig
from gateway.identity.keyring import Keyring
from gateway.identity.tokens import TokenError, TokenIssuer
from gateway.identity.vault import Vault
from gateway.identity.verifier import TokenVerifier

ENV = "HPCFED_TEST_MASTER_KEY"


@pytest.fixture
def data_path(tmp_path: Path) -> Callable[[str], Path]:
    def resolve(value: str) -> Path:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else tmp_path / path

    return resolve


@pytest.fixture
def vault_config(monkeypatch: pytest.MonkeyPatch) -> VaultConfig:
    monkeypatch.delenv(ENV, raising=False)
    return VaultConfig(master_key_env=ENV)


@pytest.fixture
def keyring(vault_config: VaultConfig, data_path: Callable[[str], Path]) -> Keyring:
    keyring = Keyring(Vault.open(vault_config, data_path, create=True))
    keyring.ensure()
    return keyring


@pytest.fixture
def auth() -> AuthConfig:
    return AuthConfig()


@pytest.fixture
def issuer(keyring: Keyring, auth: AuthConfig) -> TokenIssuer:
    return TokenIssuer(keyring, auth)


@pytest.fixture
async def verifier(
    keyring: Keyring, auth: AuthConfig, data_path: Callable[[str], Path]
) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier(keyring, auth, data_path)
    yield verifier
    await verifier.close()


class Clock:
    """Moves the time both the cache and PyJWT read, without waiting."""

    def __init__(self) -> None:
        self.shift = 0.0

    def advance(self, seconds: float) -> None:
        self.shift += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    state = Clock()
    real_time = time.time

    class ShiftedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Any:
            return datetime.now(tz) + timedelta(seconds=state.shift)

    monkeypatch.setattr(time, "time", lambda: real_time() + state.shift)
    monkeypatch.setattr(jwt.api_jwt, "datetime", ShiftedDatetime)
    yield state


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tokens whose signature and claims were checked by PyJWT, in order."""
    seen: list[str] = []
    real = gateway.identity.verifier._decode

    def counting(token: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(gateway.identity.verifier, "_decode", counting)
    return seen


async def test_repeated_token_is_verified_once(
    issuer: TokenIssuer, verifier: TokenVerifier, decodes: list[str]
) -> None:
    token = issuer.issue("alice", ["researcher"], centers=()).token
    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert first == second
    assert (second.user, second.roles) == ("alice", frozenset({"researcher"}))
    assert decodes == [token]


async def test_only_the_exact_token_string_hits(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = issuer.issue("alice", ["researcher"]).token
    await verifier.verify(token)
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(TokenError, match=r"signature|malformed"):
        await verifier.verify(tampered)
    with pytest.raises(TokenError):
        await verifier.verify(token + "x")


async def test_cached_token_is_refused_once_expired(
    issuer: TokenIssuer, verifier: TokenVerifier, auth: AuthConfig, clock: Clock
) -> None:
    token = issuer.issue("alice", ["researcher"], ttl=60).token
    await verifier.verify(token)
    clock.advance(60 + auth.leeway - 5)
    assert (await verifier.verify(token)).user == "alice"  # within the leeway
    clock.advance(10)
    with pytest.raises(TokenError, match="token has expired"):
        await verifier.verify(token)
    with pytest.raises(TokenError, match="token has expired"):
        await verifier.verify(token)  # and it stays refused


async def test_retired_key_refuses_cached_tokens_at_once(
    issuer: TokenIssuer, verifier: TokenVerifier, keyring: Keyring
) -> None:
    old = issuer.issue("alice", ["researcher"])
    await verifier.verify(old.token)
    keyring.rotate()
    fresh = issuer.issue("bob", ["researcher"])
    assert fresh.key_id != old.key_id
    assert (await verifier.verify(old.token)).user == "alice"  # rotation alone keeps it
    keyring.retire(old.key_id)
    with pytest.raises(TokenError, match="key id is unknown"):
        await verifier.verify(old.token)
    assert (await verifier.verify(fresh.token)).user == "bob"


async def test_key_retired_by_another_process_refuses_cached_tokens(
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    keyring: Keyring,
    vault_config: VaultConfig,
    data_path: Callable[[str], Path],
) -> None:
    old = issuer.issue("alice", ["researcher"])
    await verifier.verify(old.token)
    keyring.rotate()
    # What `hpcfed token retire-key` does: its own vault handle on the same file.
    Keyring(Vault.open(vault_config, data_path)).retire(old.key_id)
    with pytest.raises(TokenError, match="key id is unknown"):
        await verifier.verify(old.token)


async def test_token_not_yet_valid_is_not_served_from_cache(
    keyring: Keyring, verifier: TokenVerifier, auth: AuthConfig, clock: Clock
) -> None:
    kid, key = keyring.signing_key()
    now = int(time.time())
    claims = {"iss": auth.issuer, "aud": auth.audience, "sub": "alice", "roles": ["researcher"]}
    claims |= {"iat": now, "nbf": now, "exp": now + 600}
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
    await verifier.verify(token)
    clock.advance(-(auth.leeway + 10))  # the clock is stepped back
    with pytest.raises(TokenError, match="not yet valid"):
        await verifier.verify(token)


async def test_cache_is_bounded_and_keeps_the_recently_used(
    issuer: TokenIssuer,
    keyring: Keyring,
    auth: AuthConfig,
    data_path: Callable[[str], Path],
    decodes: list[str],
) -> None:
    verifier = TokenVerifier(keyring, auth, data_path, cache_size=3)
    tokens = [issuer.issue(f"user{i}", ["researcher"]).token for i in range(5)]
    for token in tokens[:3]:
        await verifier.verify(token)
    await verifier.verify(tokens[0])  # now the most recently used
    for token in tokens[3:]:
        await verifier.verify(token)
    assert len(verifier._cache) == 3
    decodes.clear()
    await verifier.verify(tokens[0])  # kept: used recently
    await verifier.verify(tokens[1])  # evicted first: verified afresh
    assert decodes == [tokens[1]]
    assert len(verifier._cache) == 3
    await verifier.close()


async def test_cache_can_be_turned_off(
    issuer: TokenIssuer,
    keyring: Keyring,
    auth: AuthConfig,
    data_path: Callable[[str], Path],
    decodes: list[str],
) -> None:
    verifier = TokenVerifier(keyring, auth, data_path, cache_size=0)
    token = issuer.issue("alice", ["researcher"]).token
    await verifier.verify(token)
    await verifier.verify(token)
    assert decodes == [token, token]
    await verifier.close()


async def test_refused_tokens_are_not_cached(
    keyring: Keyring, verifier: TokenVerifier, auth: AuthConfig
) -> None:
    kid, key = keyring.signing_key()
    now = int(time.time())
    claims = {"iss": auth.issuer, "aud": "someone-else", "sub": "alice", "exp": now + 600}
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})
    for _ in range(2):
        with pytest.raises(TokenError, match="audience"):
            await verifier.verify(token)
    assert token not in verifier._cache
