"""Signed tokens: issuing, verifying, key rotation, and tokens of external OIDC providers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from gateway.config_models import AuthConfig, OIDCProvider, VaultConfig
from gateway.identity.keyring import Keyring
from gateway.identity.tokens import TokenError, TokenIssuer
from gateway.identity.vault import Vault
from gateway.identity.verifier import TokenVerifier

ENV = "HPCFED_TEST_MASTER_KEY"
IDP = "https://idp.example.org/realms/hpc"
IDP_AUDIENCE = "hpcfed-api"

# ---------------------------------------------------------------- fixtures


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
def vault(vault_config: VaultConfig, data_path: Callable[[str], Path]) -> Vault:
    return Vault.open(vault_config, data_path, create=True)


@pytest.fixture
def keyring(vault: Vault) -> Keyring:
    keyring = Keyring(vault)
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


# ---------------------------------------------------------------- helpers


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "hpcfed",
        "aud": "hpcfed",
        "sub": "alice",
        "roles": ["researcher"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "0123456789abcdef",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def craft(keyring: Keyring, kid: str | None = None, **overrides: Any) -> str:
    """A token signed with the keyring's active key (or `kid` in the header)."""
    active, key = keyring.signing_key()
    return jwt.encode(claims(**overrides), key, algorithm="EdDSA", headers={"kid": kid or active})


def public_pem(keyring: Keyring) -> bytes:
    _, key = keyring.signing_key()
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256(keyring: Keyring, secret: bytes) -> str:
    """An HMAC token whose secret is the gateway's public key: the classic key confusion."""
    kid, _ = keyring.signing_key()
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64json(claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unsigned(keyring: Keyring) -> str:
    kid, _ = keyring.signing_key()
    return f"{b64json({'alg': 'none', 'kid': kid})}.{b64json(claims())}."


def replace_segment(token: str, index: int, segment: str) -> str:
    parts = token.split(".")
    parts[index] = segment
    return ".".join(parts)


def flip_first_char(segment: str) -> str:
    # The first character carries six full bits; the last may be partly padding.
    return ("B" if segment[0] == "A" else "A") + segment[1:]


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as caught:
        await verifier.verify(token)
    return str(caught.value)


# ---------------------------------------------------------------- gateway tokens


async def test_fresh_token_verifies(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    issued = issuer.issue("alice", ["researcher", "center-admin"], ["centera"], ttl=3600)
    verified = await verifier.verify(issued.token)
    assert verified.user == "alice"
    assert verified.roles == {"researcher", "center-admin"}
    assert verified.centers == {"centera"}
    assert verified.issuer == "hpcfed"
    assert verified.token_id == issued.token_id
    assert verified.expires_at == issued.expires_at
    assert 3590 < verified.expires_at.timestamp() - time.time() <= 3601


def test_issued_token_has_the_documented_claims_and_header(
    issuer: TokenIssuer, keyring: Keyring
) -> None:
    issued = issuer.issue("alice", ["researcher"])
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == issued.key_id == keyring.ensure()
    body = jwt.decode(issued.token, options={"verify_signature": False})
    assert body["iss"] == body["aud"] == "hpcfed"
    assert body["sub"] == "alice"
    assert body["roles"] == ["researcher"]
    assert "centers" not in body
    assert body["nbf"] == body["iat"]
    assert body["exp"] - body["iat"] == 8 * 3600
    assert body["jti"] == issued.token_id


def test_jwks_document_verifies_issued_tokens(issuer: TokenIssuer, keyring: Keyring) -> None:
    issued = issuer.issue("alice", ["researcher"])
    document = keyring.jwks()
    assert document["keys"][0]["kty"] == "OKP"
    assert document["keys"][0]["crv"] == "Ed25519"
    assert document["keys"][0]["use"] == "sig"
    assert "d" not in document["keys"][0]
    key = jwt.PyJWKSet.from_dict(document)[issued.key_id]
    body = jwt.decode(issued.token, key, algorithms=["EdDSA"], audience="hpcfed")
    assert body["sub"] == "alice"


def test_signing_keys_are_encrypted_in_the_vault(keyring: Keyring, vault: Vault) -> None:
    keyring.rotate()
    raw = vault.path.read_bytes()
    assert b"PRIVATE KEY" not in raw
    assert len(vault.names("signing/")) == 2


async def test_expired_token_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    past = int(time.time()) - 3600
    token = craft(keyring, iat=past - 60, nbf=past - 60, exp=past)
    assert await refused(verifier, token) == "token has expired"


async def test_token_within_leeway_of_expiry_is_accepted(
    keyring: Keyring, verifier: TokenVerifier
) -> None:
    token = craft(keyring, exp=int(time.time()) - 5)  # default leeway is 30 s
    assert (await verifier.verify(token)).user == "alice"


@pytest.mark.parametrize(
    "times",
    [
        {"exp": 10**30},
        {"exp": 1e30},
        {"exp": float("inf")},
        {"iat": float("inf")},
        {"iat": 10**30},
        {"nbf": -(10**30)},
        {"exp": True},
    ],
    ids=["exp-1e30-int", "exp-1e30", "exp-inf", "iat-inf", "iat-1e30", "nbf-negative", "exp-bool"],
)
async def test_time_claims_out_of_range_are_refused_not_an_error(
    keyring: Keyring, verifier: TokenVerifier, times: dict[str, object]
) -> None:
    """A correctly signed token whose times no clock can reach is refused (401), never
    an overflow inside the gateway."""
    message = await refused(verifier, craft(keyring, **times))
    assert message in {
        "token claim 'exp' is not a time between 1970 and 9999",
        "token claim 'iat' is not a time between 1970 and 9999",
        "token claim 'nbf' is not a time between 1970 and 9999",
        "token is malformed",
        "token has expired",  # `true` is 1 to PyJWT: a second past the epoch
        "token is not yet valid",  # PyJWT's own check of an iat in the future
    }, message


async def test_token_not_yet_valid_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    token = craft(keyring, nbf=int(time.time()) + 3600)
    assert await refused(verifier, token) == "token is not yet valid"


async def test_tampered_payload_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    token = craft(keyring)
    forged = replace_segment(token, 1, b64json(claims(roles=["admin"])))
    assert await refused(verifier, forged) == "token signature does not verify"
    payload = token.split(".")[1]
    flipped = replace_segment(token, 1, flip_first_char(payload))
    await refused(verifier, flipped)


async def test_tampered_signature_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    token = craft(keyring)
    tampered = replace_segment(token, 2, flip_first_char(token.split(".")[2]))
    assert await refused(verifier, tampered) == "token signature does not verify"


async def test_wrong_audience_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    token = craft(keyring, aud="another-service")
    assert await refused(verifier, token) == "token audience is not accepted"


async def test_unknown_issuer_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    token = craft(keyring, iss="https://evil.example")
    assert await refused(verifier, token) == "token issuer is not trusted"


async def test_missing_expiry_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    token = craft(keyring, exp=None)
    assert await refused(verifier, token) == "token is missing claim 'exp'"


async def test_unsigned_token_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    message = await refused(verifier, unsigned(keyring))
    assert message == "token is not signed with an accepted algorithm"


async def test_hs256_token_keyed_with_the_public_key_is_refused(
    keyring: Keyring, verifier: TokenVerifier
) -> None:
    for secret in (public_pem(keyring), next(iter(keyring.jwks()["keys"]))["x"].encode()):
        message = await refused(verifier, hs256(keyring, secret))
        assert message == "token is not signed with an accepted algorithm"


async def test_unknown_key_id_is_refused(keyring: Keyring, verifier: TokenVerifier) -> None:
    token = craft(keyring, kid="nosuchkey123")
    assert await refused(verifier, token) == "token key id is unknown"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30"])
async def test_garbage_is_refused_as_malformed(verifier: TokenVerifier, token: str) -> None:
    assert await refused(verifier, token) in (
        "token is malformed",
        "token is missing claim 'iss'",
    )


async def test_refusals_never_contain_the_token(keyring: Keyring, verifier: TokenVerifier) -> None:
    now = int(time.time())
    good = craft(keyring)
    bad_tokens = [
        craft(keyring, exp=now - 3600),
        craft(keyring, nbf=now + 3600),
        craft(keyring, aud="elsewhere"),
        craft(keyring, iss="https://evil.example"),
        craft(keyring, kid="nosuchkey123"),
        replace_segment(good, 1, b64json(claims(sub="mallory"))),
        replace_segment(good, 2, flip_first_char(good.split(".")[2])),
        unsigned(keyring),
        hs256(keyring, public_pem(keyring)),
        good[:-10],
    ]
    for token in bad_tokens:
        message = await refused(verifier, token)
        assert token not in message
        for segment in token.split("."):
            if len(segment) >= 4:
                assert segment[:16] not in message


# ---------------------------------------------------------------- rotation


async def test_rotation_keeps_old_tokens_until_the_old_key_is_retired(
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    keyring: Keyring,
    vault_config: VaultConfig,
    data_path: Callable[[str], Path],
) -> None:
    old_kid = keyring.ensure()
    old_token = issuer.issue("alice", ["researcher"]).token
    assert (await verifier.verify(old_token)).user == "alice"

    # The CLI rotates and retires through its own vault while the gateway runs.
    cli = Keyring(Vault.open(vault_config, data_path))
    new_kid = cli.rotate()
    assert keyring.ensure() == new_kid
    assert [(k.kid, k.active) for k in keyring.keys()] == [(new_kid, True), (old_kid, False)]
    new_token = issuer.issue("bob", ["operator"])
    assert new_token.key_id == new_kid
    assert (await verifier.verify(old_token)).user == "alice"

    cli.retire(old_kid)
    assert await refused(verifier, old_token) == "token key id is unknown"
    assert (await verifier.verify(new_token.token)).user == "bob"


def test_retiring_the_last_key_is_refused(keyring: Keyring) -> None:
    with pytest.raises(ValueError, match="only one"):
        keyring.retire(keyring.ensure())
    assert len(keyring.keys()) == 1


def test_retiring_an_unknown_key_is_refused(keyring: Keyring) -> None:
    keyring.rotate()
    with pytest.raises(ValueError, match="no signing key"):
        keyring.retire("nosuchkey123")


def test_ensure_creates_one_key_only(vault: Vault) -> None:
    keyring = Keyring(vault)
    kid = keyring.ensure()
    assert keyring.ensure() == kid
    assert [k.kid for k in keyring.keys()] == [kid]


def test_each_rotation_makes_the_new_key_active(keyring: Keyring) -> None:
    kids = [keyring.rotate() for _ in range(3)]
    assert keyring.ensure() == kids[-1]
    assert keyring.signing_key()[0] == kids[-1]
    assert [k.kid for k in keyring.keys()][:3] == kids[::-1]


# ---------------------------------------------------------------- issuing


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"user": "Alice", "roles": ["researcher"]}, "user:"),
        ({"user": "alice\n", "roles": ["researcher"]}, "user:"),
        ({"user": "alice", "roles": []}, "roles:"),
        ({"user": "alice", "roles": ["root"]}, "roles:"),
        ({"user": "alice", "roles": ["center-admin"]}, "centers:"),
        ({"user": "alice", "roles": ["researcher"], "centers": ["Bad Center"]}, "centers:"),
        ({"user": "alice", "roles": ["researcher"], "ttl": 31 * 86400}, "ttl:"),
        ({"user": "alice", "roles": ["researcher"], "ttl": 0}, "ttl:"),
        ({"user": "alice", "roles": ["researcher"], "ttl": -5}, "ttl:"),
    ],
)
def test_issue_errors_name_the_field(
    issuer: TokenIssuer, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError) as caught:
        issuer.issue(**kwargs)
    assert str(caught.value).startswith(field)


# ---------------------------------------------------------------- OIDC: key file


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
IDP_ED_KEY = ed25519.Ed25519PrivateKey.generate()
STRANGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def idp_jwks() -> dict[str, Any]:
    rsa_jwk = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
    ed_jwk = OKPAlgorithm.to_jwk(IDP_ED_KEY.public_key(), as_dict=True)
    return {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
            {**ed_jwk, "kid": "ed-1", "use": "sig"},
            {"kty": "oct", "k": b64(b"shared"), "kid": "hmac-1"},
            {"kty": "XYZ", "kid": "weird"},
        ]
    }


def idp_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": IDP,
        "aud": [IDP_AUDIENCE, "account"],
        "sub": "f3b0c2d4-uuid",
        "preferred_username": "carol",
        "roles": ["researcher", "offline_access", "uma_authorization"],
        "hpcfed_centers": ["centera"],
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def idp_token(kid: str = "rsa-1", key: Any = None, alg: str = "RS256", **overrides: Any) -> str:
    key = key if key is not None else (RSA_KEY if alg.startswith("RS") else IDP_ED_KEY)
    return jwt.encode(idp_claims(**overrides), key, algorithm=alg, headers={"kid": kid})


def file_provider(**overrides: Any) -> OIDCProvider:
    settings: dict[str, Any] = {
        "issuer": IDP,
        "audience": IDP_AUDIENCE,
        "jwks_file": "oidc/idp-jwks.json",
    }
    settings.update(overrides)
    return OIDCProvider(**settings)


@pytest.fixture
async def oidc_verifier(
    keyring: Keyring, data_path: Callable[[str], Path]
) -> AsyncIterator[TokenVerifier]:
    path = data_path("oidc/idp-jwks.json")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(idp_jwks()))
    auth = AuthConfig(oidc=[file_provider(default_roles=["researcher"])])
    verifier = TokenVerifier(keyring, auth, data_path)
    yield verifier
    await verifier.close()


async def test_oidc_rsa_token_is_accepted_with_known_roles_only(
    oidc_verifier: TokenVerifier,
) -> None:
    verified = await oidc_verifier.verify(idp_token())
    assert verified.user == "carol"
    assert verified.roles == {"researcher"}
    assert verified.centers == {"centera"}
    assert verified.issuer == IDP


async def test_oidc_ed25519_token_is_accepted(oidc_verifier: TokenVerifier) -> None:
    token = idp_token(kid="ed-1", alg="EdDSA", roles="operator researcher bogus")
    verified = await oidc_verifier.verify(token)
    assert verified.user == "carol"
    assert verified.roles == {"operator", "researcher"}


async def test_oidc_token_without_roles_gets_the_default_roles(
    oidc_verifier: TokenVerifier,
) -> None:
    verified = await oidc_verifier.verify(idp_token(roles=["offline_access"]))
    assert verified.roles == {"researcher"}


async def test_oidc_token_for_another_audience_is_refused(
    oidc_verifier: TokenVerifier,
) -> None:
    token = idp_token(aud="some-other-client")
    assert await refused(oidc_verifier, token) == "token audience is not accepted"


async def test_expired_oidc_token_is_refused(oidc_verifier: TokenVerifier) -> None:
    past = int(time.time()) - 3600
    token = idp_token(iat=past - 300, exp=past)
    assert await refused(oidc_verifier, token) == "token has expired"


async def test_oidc_token_signed_by_another_key_is_refused(
    oidc_verifier: TokenVerifier,
) -> None:
    token = idp_token(key=STRANGER_KEY)
    assert await refused(oidc_verifier, token) == "token signature does not verify"


async def test_oidc_token_with_a_disallowed_algorithm_is_refused(
    oidc_verifier: TokenVerifier,
) -> None:
    token = idp_token(kid="rsa-1", alg="RS512")  # not in the provider's algorithms
    assert await refused(oidc_verifier, token) == "token is not signed with an accepted algorithm"


async def test_oidc_token_for_a_symmetric_key_in_the_set_is_refused(
    oidc_verifier: TokenVerifier,
) -> None:
    token = jwt.encode(idp_claims(), b"shared" * 6, algorithm="HS256", headers={"kid": "hmac-1"})
    assert await refused(oidc_verifier, token) == "token is not signed with an accepted algorithm"


async def test_oidc_token_without_a_valid_user_claim_is_refused(
    oidc_verifier: TokenVerifier,
) -> None:
    token = idp_token(preferred_username="Carol Smith")
    message = await refused(oidc_verifier, token)
    assert message == ("token user claim 'preferred_username' is missing or not a valid user name")


async def test_missing_oidc_key_file_is_refused_and_logged(
    keyring: Keyring, data_path: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    auth = AuthConfig(oidc=[file_provider(jwks_file="nowhere/jwks.json")])
    verifier = TokenVerifier(keyring, auth, data_path)
    with caplog.at_level(logging.WARNING, logger="hpcfed.auth"):
        message = await refused(verifier, idp_token())
    assert message == f"token key set of issuer {IDP} cannot be loaded"
    assert str(data_path("nowhere/jwks.json")) in caplog.text


async def test_oidc_key_file_is_reread_when_it_changes(
    oidc_verifier: TokenVerifier, data_path: Callable[[str], Path]
) -> None:
    token = idp_token(key=STRANGER_KEY, kid="rsa-2")
    assert await refused(oidc_verifier, token) == "token key id is unknown"
    document = idp_jwks()
    stranger = RSAAlgorithm.to_jwk(STRANGER_KEY.public_key(), as_dict=True)
    document["keys"].append({**stranger, "kid": "rsa-2"})
    path = data_path("oidc/idp-jwks.json")
    path.write_text(json.dumps(document))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    assert (await oidc_verifier.verify(token)).user == "carol"


# ---------------------------------------------------------------- OIDC: key URL


class JwksServer:
    """A real HTTP server on loopback serving a JWKS and counting fetches."""

    def __init__(self) -> None:
        self.fetches = 0
        self.status = 200
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        return web.json_response(idp_jwks())

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/jwks", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/jwks"


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


@pytest.fixture
async def url_verifier(
    keyring: Keyring, data_path: Callable[[str], Path], jwks_server: JwksServer
) -> AsyncIterator[TokenVerifier]:
    provider = OIDCProvider(issuer=IDP, audience=IDP_AUDIENCE, jwks_url=jwks_server.url)
    verifier = TokenVerifier(keyring, AuthConfig(oidc=[provider]), data_path)
    yield verifier
    await verifier.close()


async def test_oidc_keys_fetched_from_url_are_cached(
    url_verifier: TokenVerifier, jwks_server: JwksServer
) -> None:
    assert (await url_verifier.verify(idp_token())).user == "carol"
    assert jwks_server.fetches == 1
    other = idp_token(kid="ed-1", alg="EdDSA", preferred_username="dave")
    assert (await url_verifier.verify(other)).user == "dave"
    assert jwks_server.fetches == 1


async def test_unknown_kids_cause_at_most_one_refetch(
    url_verifier: TokenVerifier, jwks_server: JwksServer
) -> None:
    await url_verifier.verify(idp_token())
    for i in range(5):
        token = idp_token(kid=f"random-{i}")
        assert await refused(url_verifier, token) == "token key id is unknown"
    assert jwks_server.fetches == 2


async def test_failed_key_fetch_is_refused_and_logged(
    url_verifier: TokenVerifier, jwks_server: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    jwks_server.status = 503
    with caplog.at_level(logging.WARNING, logger="hpcfed.auth"):
        message = await refused(url_verifier, idp_token())
        assert await refused(url_verifier, idp_token()) == message
    assert message == f"token key set of issuer {IDP} cannot be loaded"
    assert "HTTP status 503" in caplog.text
    assert jwks_server.fetches == 1  # no new fetch right after a failure
