"""The gateway's configuration (`gateway.yaml`): listen address, store, auth, vault,
request limits, admission, placement, computing power, health, and its centers.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from gateway.fields import CENTER_ID_PATTERN, USER_PATTERN, Role, _Strict
from gateway.units import MemoryMiB, Seconds


class ListenConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8750, ge=0, le=65535)


class PoolConfig(_Strict):
    """Connections a replica keeps to PostgreSQL."""

    min_size: int = Field(2, ge=1, le=1000)
    max_size: int = Field(10, ge=1, le=1000)
    timeout: Seconds = Field(
        5.0, gt=0, description="how long a request waits for a connection before 503"
    )

    @model_validator(mode="after")
    def _ordered(self) -> PoolConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) is above max_size ({self.max_size})")
        return self


#: A libpq connection URI or key=value string; its password part is refused.
_DSN_PASSWORD = re.compile(r"^postgres(?:ql)?://[^/@]*:[^/@]*@|(?:^|\s)password\s*=", re.I)


class StoreConfig(_Strict):
    """Where state is kept: `sqlite` (one file, one gateway process: the embedded
    default) or `postgres` (shared by every replica; see docs/deployment.md)."""

    kind: Literal["sqlite", "postgres"] = "sqlite"
    path: str = Field("hpcfed.db", description="sqlite: relative paths are under data_dir")
    dsn: str | None = Field(
        None,
        min_length=1,
        description="postgres: a libpq connection string without its password "
        "(the password comes from PGPASSWORD or a pgpass file)",
    )
    pool: PoolConfig = Field(default_factory=PoolConfig)
    migrate: Literal["auto", "manual"] = Field(
        "auto",
        description="auto: a start applies the migrations the schema lacks; manual: it "
        "refuses to start until `hpcfed db migrate` has",
    )

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> StoreConfig:
        if self.kind == "postgres":
            if self.dsn is None:
                raise ValueError("dsn: required with kind postgres")
            if _DSN_PASSWORD.search(self.dsn):
                raise ValueError(
                    "dsn: holds a password; give it in PGPASSWORD or a pgpass file instead"
                )
        elif self.dsn is not None:
            raise ValueError("dsn: only with kind postgres")
        return self


class OIDCProvider(_Strict):
    """An external OpenID Connect provider whose access tokens the gateway accepts."""

    issuer: str = Field(min_length=1, description="must equal the token's 'iss'")
    audience: str = Field(min_length=1, description="must be in the token's 'aud'")
    jwks_file: str | None = Field(None, description="JWKS document; relative to data_dir")
    jwks_url: str | None = Field(None, pattern=r"^https?://\S+$")
    jwks_refresh: Seconds = Field(600.0, description="how long fetched keys are trusted")
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]] = (
        Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"], min_length=1)
    )
    user_claim: str = Field("preferred_username", description="claim holding the user name")
    roles_claim: str = Field("roles", description="claim holding a list of hpcfed roles")
    centers_claim: str = Field("hpcfed_centers", description="centers a center-admin runs")
    default_roles: list[Role] = Field(
        default_factory=list, description="roles given when the token names none"
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> OIDCProvider:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of jwks_file and jwks_url")
        return self


class AuthConfig(_Strict):
    issuer: str = Field("hpcfed", min_length=1, description="'iss' of tokens this gateway signs")
    audience: str = Field("hpcfed", min_length=1, description="'aud' of tokens it signs")
    default_ttl: Seconds = Field(8 * 3600.0, description="lifetime of an issued token")
    max_ttl: Seconds = Field(30 * 86400.0, description="the longest lifetime one may ask for")
    leeway: Seconds = Field(30.0, description="clock skew allowed on exp and nbf")
    bootstrap_user: str | None = Field(
        None,
        pattern=USER_PATTERN,
        description="if set, keep a valid token for this user in <data_dir>/client-token",
    )
    bootstrap_roles: list[Role] = Field(default_factory=lambda: ["researcher"], min_length=1)
    oidc: list[OIDCProvider] = Field(default_factory=list)


class VaultConfig(_Strict):
    path: str = Field("vault.json", description="the encrypted secrets; relative to data_dir")
    master_key_file: str = Field(
        "master.key", description="mode 0600; used when master_key_env is unset"
    )
    master_key_env: str = Field("HPCFED_MASTER_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")


class LimitsConfig(_Strict):
    max_body: MemoryMiB = Field(4, description="largest request body, e.g. '4MiB'")
    max_spec: MemoryMiB = Field(
        1,
        description="largest job spec content: script (or command), arguments and "
        "environment together, e.g. '1MiB'",
    )
    max_page: MemoryMiB = Field(
        8, description="largest list page answer; a page stops early past it (next_cursor)"
    )
    max_in_flight: MemoryMiB = Field(
        16,
        description="request bodies and list pages handled at once, all users together; "
        "more wait their turn (bounds the gateway's memory)",
    )
    rate: float = Field(20.0, gt=0, description="requests per second per user, sustained")
    burst: int = Field(100, ge=1, description="requests a user may make at once")


class AdmissionConfig(_Strict):
    """When an access evaluation admits a center (see docs/evaluation.md)."""

    required: bool = Field(
        True, description="placed jobs go only to admitted centers (local centers need none)"
    )
    min_score: float = Field(80.0, ge=0, le=100, description="weighted share of checks passed")
    max_ssh_latency_ms: float = Field(250.0, gt=0, description="median SSH command round trip")
    min_bandwidth_mb_s: float = Field(5.0, ge=0, description="upload and download, MB/s")
    min_gflops_per_core: float = Field(0.01, ge=0, description="the compute probe's figure")
    job_timeout: Seconds = Field(180.0, description="how long a probe job may take to end")


class PlacementConfig(_Strict):
    default_preference: Literal["fastest", "cheapest", "greenest", "near_data"] = "fastest"


class ComputingPowerConfig(_Strict):
    cache_ttl: Seconds = Field(10.0, description="how long a center's live load is reused")
    availability_window: Seconds = Field(
        7 * 86400.0, description="how far back availability counts probe outcomes"
    )


class HealthConfig(_Strict):
    probe_interval: Seconds = Field(15.0, description="how often every center is probed")
    probe_timeout: Seconds = Field(10.0, description="how long one center's probe may take")
    down_after: int = Field(2, ge=1, description="consecutive failed probes before down")
    up_after: int = Field(1, ge=1, description="consecutive good probes before up again")
    degraded_latency_ms: float = Field(
        1000.0, gt=0, description="SSH p50 above this (or an unreadable root): degraded"
    )
    degraded_after_failed_submissions: int = Field(
        3, ge=1, description="this many failed submissions in a row (no answer): degraded"
    )
    window: Seconds = Field(900.0, description="for error rate and latency percentiles")


class GatewayConfig(_Strict):
    data_dir: str = Field("~/.local/share/hpcfed", description="overridden by HPCFED_DATA_DIR")
    listen: ListenConfig = Field(default_factory=ListenConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    vault: VaultConfig = Field(default_factory=VaultConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    audit_log: str = Field("audit.log", description="JSON lines; relative to data_dir")
    poll_interval: Seconds = 2.0
    lease_ttl: Seconds = Field(
        5.0,
        description="how long a replica's lease of a center's polling and probing (or of a "
        "job it sends) lasts unrenewed: a dead replica's centers move to another within "
        "about lease_ttl * 4/3",
    )
    unaccounted_after: Seconds = Field(
        600.0,
        description="a job its center stops listing, with nothing there confirming its end, "
        "is shown as UNKNOWN (native state UNACCOUNTED) after this long; never as ended",
    )
    submit_timeout: Seconds = Field(30.0, description="how long POST /v1/jobs waits for a center")
    submit_attempts: int = Field(
        8,
        ge=1,
        description="a job whose submission's outcome stays unknown is sent again, 5 s after "
        "the first failure and twice as long after each next one (at most 5 min); after "
        "this many attempts, and once its center shows it does not have it, it is FAILED",
    )
    center_files: list[str] = Field(
        default_factory=list, description="center YAML files or globs, relative to this file"
    )
    app_files: list[str] = Field(
        default_factory=lambda: ["apps/*.yaml"],
        description="application definitions (YAML files or globs), relative to this file",
    )
    default_center: str | None = Field(
        None,
        pattern=CENTER_ID_PATTERN,
        description="where `center: auto` goes when the spec has no `placement` and this "
        "center can take the job; unset: placement chooses",
    )
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    computing_power: ComputingPowerConfig = Field(default_factory=ComputingPowerConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
