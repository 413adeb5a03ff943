"""Authentication, roles and request limits at the HTTP boundary of a real gateway."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import LoadedConfig
from gateway.config_models import LimitsConfig, OIDCProvider
from gateway.fields import ROLES
from gateway.http.auth import ROUTE_PERMISSIONS
from gateway.http.routes.keys import KEYRING
from gateway.identity.audit import read_audit
from gateway.identity.permissions import Principal
from tests.conftest import Gateway, GatewayFactory, config_with

#: A concrete request for every route; a test below fails when a route is missing here.
ROUTE_SAMPLES: dict[str, tuple[str, str]] = {
    "healthz": ("GET", "/healthz"),
    "readyz": ("GET", "/readyz"),
    "health": ("GET", "/v1/health"),
    "auth.jwks": ("GET", "/v1/auth/jwks.json"),
    "openapi": ("GET", "/v1/openapi.json"),
    "jobs.submit": ("POST", "/v1/jobs"),
    "jobs.batch": ("POST", "/v1/jobs/batch"),
    "jobs.list": ("GET", "/v1/jobs"),
    "jobs.get": ("GET", f"/v1/jobs/{uuid.UUID(int=1)}"),
    "jobs.cancel": ("DELETE", f"/v1/jobs/{uuid.UUID(int=1)}"),
    "jobs.output": ("GET", f"/v1/jobs/{uuid.UUID(int=1)}/output/stdout"),
    # No such job: 404 at once. The user stream answers 200 and stays open; the sample
    # reads only its status and hangs up.
    "jobs.events": ("GET", f"/v1/jobs/{uuid.UUID(int=1)}/events"),
    "events.list": ("GET", "/v1/events"),
    "centers.list": ("GET", "/v1/centers"),
    "centers.get": ("GET", "/v1/centers/local"),
    "centers.computing_power": ("GET", "/v1/centers/local/computing-power"),
    "usage.read": ("GET", "/v1/usage"),
    "tokens.issue": ("POST", "/v1/tokens"),
    "jobs.upload_input": ("PUT", f"/v1/jobs/{uuid.UUID(int=1)}/inputs/0"),
    "files.roots": ("GET", "/v1/centers/local/files/roots"),
    "files.list": ("GET", "/v1/centers/local/files"),
    "files.stat": ("GET", "/v1/centers/local/files/stat?path=x"),
    "files.checksum": ("GET", "/v1/centers/local/files/checksum?path=x"),
    "files.download": ("GET", "/v1/centers/local/files/content?path=x"),
    "files.head": ("HEAD", "/v1/centers/local/files/content?path=x"),
    "files.upload": ("PUT", "/v1/centers/local/files/content?path=sample.txt"),
    "files.mkdir": ("POST", "/v1/centers/local/files/mkdir"),
    "files.rename": ("POST", "/v1/centers/local/files/rename"),
    "files.remove": ("DELETE", "/v1/centers/local/files?path=x"),
    "transfers.create": ("POST", "/v1/transfers"),
    "transfers.list": ("GET", "/v1/transfers"),
    "transfers.get": ("GET", f"/v1/transfers/{uuid.UUID(int=1)}"),
    "transfers.cancel": ("DELETE", f"/v1/transfers/{uuid.UUID(int=1)}"),
    "apps.list": ("GET", "/v1/apps"),
    "apps.get": ("GET", "/v1/apps/lammps"),
    "apps.put": ("PUT", "/v1/apps/sample"),
    "apps.delete": ("DELETE", "/v1/apps/sample"),
    "apps.canaries": ("POST", "/v1/centers/local/app-canaries"),
    "evaluations.start": ("POST", "/v1/centers/local/evaluations"),
    "evaluations.list": ("GET", "/v1/centers/local/evaluations"),
    "evaluations.get": ("GET", f"/v1/centers/local/evaluations/{uuid.UUID(int=1)}"),
    "metrics": ("GET", "/metrics"),
    "dashboard.page": ("GET", "/dashboard"),
    "dashboard.file": ("GET", "/dashboard/dashboard.js"),
    "tes.service_info": ("GET", "/ga4gh/tes/v1/service-info"),
    "tes.service_info_v1_0": ("GET", "/ga4gh/tes/v1/tasks/service-info"),
    "tes.list": ("GET", "/ga4gh/tes/v1/tasks"),
    "tes.create": ("POST", "/ga4gh/tes/v1/tasks"),
    "tes.get": ("GET", f"/ga4gh/tes/v1/tasks/{uuid.UUID(int=1)}"),
    "tes.cancel": ("POST", f"/ga4gh/tes/v1/tasks/{uuid.UUID(int=1)}:cancel"),
}


async def call(
    gw: Gateway, method: str, path: str, token: str | None, **kwargs: Any
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gw.url + path, headers=headers, **kwargs) as resp,
    ):
        body = await resp.json(content_type=None) if resp.content_type == "application/json" else {}
        return resp.status, body, resp.headers


def signed(gw: Gateway, **claims: Any) -> str:
    """A token signed with the gateway's active key, with claims overridden."""
    kid, key = gw.app[KEYRING].signing_key()
    now = int(time.time())
    payload = {
        "iss": "hpcfed",
        "aud": "hpcfed",
        "sub": "alice",
        "roles": ["researcher"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid})


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
async def gw(start_gateway: GatewayFactory, local_config: LoadedConfig) -> Gateway:
    return await start_gateway(local_config, {"alice": ("researcher",), "bob": ("researcher",)})


# ------------------------------------------------------------ authentication


def _tampered(gw: Gateway) -> str:
    header, payload, signature = signed(gw).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    return f"{header}.{b64(claims)}.{signature}"


REFUSED_TOKENS = {
    "expired": lambda gw: signed(gw, iat=1000, nbf=1000, exp=2000),
    "not_yet_valid": lambda gw: signed(gw, nbf=int(time.time()) + 3600),
    "tampered": _tampered,
    "wrong_audience": lambda gw: signed(gw, aud="another-service"),
    "wrong_issuer": lambda gw: signed(gw, iss="https://idp.elsewhere.example"),
    "unsigned": lambda gw: f"{b64({'alg': 'none', 'typ': 'JWT'})}.{signed(gw).split('.')[1]}.",
    "garbage": lambda gw: "not-a-token",
}


@pytest.mark.parametrize("kind", sorted(REFUSED_TOKENS))
async def test_bad_tokens_are_refused_with_401(gw: Gateway, kind: str) -> None:
    token = REFUSED_TOKENS[kind](gw)
    status, body, headers = await call(gw, "GET", "/v1/jobs", token)
    assert status == 401, body
    assert body["error"]["code"] == "unauthenticated"
    assert body["error"]["field"] == "Authorization"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert token not in json.dumps(body)


async def test_missing_or_non_bearer_authorization_is_refused(gw: Gateway) -> None:
    assert (await call(gw, "GET", "/v1/jobs", None))[0] == 401
    async with (
        aiohttp.ClientSession() as session,
        session.get(gw.url + "/v1/jobs", headers={"Authorization": "Basic YWxpY2U6eA=="}) as resp,
    ):
        assert resp.status == 401


async def test_a_valid_token_names_the_user(gw: Gateway) -> None:
    status, body, _ = await call(gw, "GET", "/v1/jobs", gw.tokens["alice"])
    assert (status, body["jobs"]) == (200, [])


async def test_rotated_key_verifies_until_retired(gw: Gateway) -> None:
    keyring = gw.app[KEYRING]
    old_kid = keyring.ensure()
    old = gw.tokens["alice"]
    keyring.rotate()
    new = gw.issue("alice")
    assert (await call(gw, "GET", "/v1/jobs", old))[0] == 200
    assert (await call(gw, "GET", "/v1/jobs", new))[0] == 200
    keyring.retire(old_kid)
    assert (await call(gw, "GET", "/v1/jobs", old))[0] == 401
    assert (await call(gw, "GET", "/v1/jobs", new))[0] == 200


async def test_tokens_of_a_configured_oidc_provider_are_accepted(
    start_gateway: GatewayFactory, local_config: LoadedConfig, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "idp-jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "idp-1", "alg": "RS256"}]}))
    provider = OIDCProvider(issuer="https://idp.example", audience="hpcfed-gw", jwks_file=str(jwks))
    auth = local_config.gateway.auth.model_copy(update={"oidc": [provider]})
    gw = await start_gateway(config_with(local_config, local_config.data_dir, auth=auth))
    now = int(time.time())
    claims = {
        "iss": "https://idp.example",
        "aud": "hpcfed-gw",
        "preferred_username": "ada",
        "roles": ["researcher", "not-a-role"],
        "iat": now,
        "exp": now + 300,
    }
    good = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "idp-1"})
    status, body, _ = await call(gw, "GET", "/v1/jobs", good)
    assert (status, body) == (200, {"jobs": [], "next_cursor": None})
    wrong_aud = jwt.encode({**claims, "aud": "x"}, key, algorithm="RS256", headers={"kid": "idp-1"})
    assert (await call(gw, "GET", "/v1/jobs", wrong_aud))[0] == 401


# ------------------------------------------------------------ roles, route by route


def test_every_route_is_registered_with_a_permission_and_sampled(gw: Gateway) -> None:
    names = {route.name for route in gw.app.router.routes()}
    assert None not in names, "a route was added without add_route"
    assert names == set(gw.app[ROUTE_PERMISSIONS]) == set(ROUTE_SAMPLES)


@pytest.mark.parametrize("route", sorted(ROUTE_SAMPLES))
async def test_route_admits_exactly_the_roles_granted_its_permission(
    gw: Gateway, route: str
) -> None:
    method, path = ROUTE_SAMPLES[route]
    permission = gw.app[ROUTE_PERMISSIONS][route]
    anonymous = (await call(gw, method, path, None))[0]
    assert (anonymous == 401) == (permission is not None)
    for role in ROLES:
        token = gw.issue(f"user-{role}", role, centers=("local",) if role == "center-admin" else ())
        status, body, _ = await call(gw, method, path, token, json={})
        principal = Principal(f"user-{role}", frozenset({role}), frozenset({"local"}))
        allowed = permission is None or principal.may(permission, "local")
        if allowed:
            assert status not in (401, 403), (role, status, body)
        else:
            assert status == 403, (role, status, body)
            if method == "HEAD":
                continue  # no body to read the error from
            # GA4GH TES routes answer in GA4GH's shape, the others in the gateway's.
            error = body if path.startswith("/ga4gh/") else body["error"]
            assert error["code"] == "forbidden"
            assert error["permission"] == permission


async def test_admin_issues_tokens_and_researchers_may_not(gw: Gateway) -> None:
    admin = gw.issue("root", "admin")
    status, body, headers = await call(
        gw,
        "POST",
        "/v1/tokens",
        admin,
        json={"user": "carol", "roles": ["researcher"], "ttl": "1h"},
    )
    assert status == 201, body
    assert headers["Cache-Control"] == "no-store"
    assert (await call(gw, "GET", "/v1/jobs", body["token"]))[0] == 200
    status, body, _ = await call(
        gw, "POST", "/v1/tokens", admin, json={"user": "carol", "roles": ["wizard"]}
    )
    assert (status, body["error"]["field"]) == (422, "roles[0]")
    status, body, _ = await call(
        gw, "POST", "/v1/tokens", admin, json={"user": "carol", "roles": ["admin"], "ttl": "400d"}
    )
    assert (status, body["error"]["field"]) == (422, "ttl")
    status, _, _ = await call(
        gw, "POST", "/v1/tokens", gw.tokens["alice"], json={"user": "alice", "roles": ["admin"]}
    )
    assert status == 403


async def test_audit_log_records_each_change_with_who_and_outcome(gw: Gateway) -> None:
    alice = gw.tokens["alice"]
    status, job, _ = await call(
        gw, "POST", "/v1/jobs", alice, json={"command": "sleep", "arguments": ["30"]}
    )
    assert status in (201, 202), job
    await call(gw, "DELETE", f"/v1/jobs/{job['id']}", gw.tokens["bob"])  # not bob's: 404
    cancelled = (await call(gw, "DELETE", f"/v1/jobs/{job['id']}", alice))[0]
    await call(gw, "GET", "/v1/jobs", alice)  # reads are not audited
    await call(gw, "POST", "/v1/tokens", alice, json={"user": "alice", "roles": ["admin"]})
    entries = read_audit(gw.config.data_path(gw.config.gateway.audit_log))
    seen = [(e["action"], e["actor"], e["outcome"], e["status"]) for e in entries]
    assert seen == [
        ("jobs.submit", "alice", "ok", status),
        ("jobs.cancel", "bob", "refused", 404),
        ("jobs.cancel", "alice", "ok", cancelled),
        ("tokens.issue", "alice", "denied", 403),
    ]
    assert entries[0]["target"] == {"job": job["id"], "center": "local"}
    assert entries[2]["target"] == {"id": job["id"]}
    assert all(e["source"] == "127.0.0.1" for e in entries)


# ------------------------------------------------------------ limits


async def test_requests_beyond_the_rate_limit_get_429_with_retry_after(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    limits = LimitsConfig(rate=0.2, burst=3)
    gw = await start_gateway(config_with(local_config, local_config.data_dir, limits=limits))
    statuses = [(await call(gw, "GET", "/v1/jobs", gw.tokens["alice"]))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    status, body, headers = await call(gw, "GET", "/v1/jobs", gw.tokens["alice"])
    assert status == 429
    assert body["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    assert (await call(gw, "GET", "/v1/jobs", gw.tokens["bob"]))[0] == 200  # per user


async def test_body_over_the_cap_gets_413_naming_the_body(
    start_gateway: GatewayFactory, local_config: LoadedConfig
) -> None:
    limits = LimitsConfig(max_body="1MiB")
    gw = await start_gateway(config_with(local_config, local_config.data_dir, limits=limits))
    spec = {"command": "echo", "arguments": ["x" * (2 << 20)]}
    status, body, _ = await call(gw, "POST", "/v1/jobs", gw.tokens["alice"], json=spec)
    assert status == 413
    assert (body["error"]["code"], body["error"]["field"]) == ("body_too_large", "body")
