"""The computing-power descriptor: the standard document every center publishes.

One shape for every center type (Slurm, PBS, local, and any other registered),
versioned by `DESCRIPTOR_VERSION`; `configs/schema/computing-power.schema.json` is
generated from these models (`hpcfed center descriptor-schema`) and every document
the gateway serves validates against that file. A change that breaks readers bumps
the major version.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DESCRIPTOR_VERSION = "1.0"
SCHEMA_ID = "https://hpcfed.org/schemas/computing-power/v1.json"
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "configs/schema/computing-power.schema.json"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CenterIdentity(_Doc):
    id: str
    name: str
    type: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="the center's type as its registry entry names it: slurm, pbs, local, "
        "or a type added to the gateway",
    )
    region: str


class GpuModel(_Doc):
    model: str
    count: int = Field(ge=0)
    per_node: int = Field(ge=0)
    peak_tflops: float | None = Field(None, description="of one GPU; None: not configured")


class Partition(_Doc):
    name: str
    default: bool
    available: bool
    nodes: int = Field(ge=0)
    cores: int = Field(ge=0)
    cores_per_node: int = Field(ge=0)
    memory_per_node_mib: int = Field(ge=0)
    max_walltime_seconds: int | None = Field(None, description="None: no limit")
    max_nodes_per_job: int | None = None
    gpus: list[GpuModel] = Field(default_factory=list)
    peak_gflops: float | None = Field(None, description="None: hardware figures not configured")


class Peak(_Doc):
    """Theoretical double-precision peak from the configured hardware figures."""

    gflops: float = Field(ge=0)
    cpu_gflops: float = Field(ge=0)
    gpu_gflops: float = Field(ge=0)
    complete: bool = Field(description="False: some partition or GPU model has no figures")


class Measured(_Doc):
    """From the latest access evaluation's compute probe: HPL (hpcc) on the cores of
    one node of the default partition."""

    kernel: str = Field(description="hpl; earlier evaluations named another kernel")
    hpl_gflops: float | None = Field(
        None, ge=0, description="HPL's GFLOP/s; None: measured by an older probe"
    )
    cores: int | None = Field(None, ge=1, description="the cores (MPI ranks) HPL ran on")
    problem_size: int | None = Field(None, ge=1, description="HPL's N")
    peak_gflops: float | None = Field(
        None, ge=0, description="theoretical peak of those cores; None: no hardware figures"
    )
    efficiency: float | None = Field(
        None, ge=0, description="hpl_gflops / peak_gflops; None without a peak"
    )
    gflops_per_core: float = Field(ge=0, description="hpl_gflops / cores")
    evaluation_id: str
    measured_at: datetime


class Counts(_Doc):
    total: int = Field(ge=0)
    idle: int = Field(ge=0)
    allocated: int = Field(ge=0)
    down: int = Field(ge=0)


class GpuUse(_Doc):
    model: str
    total: int = Field(ge=0)
    allocated: int = Field(ge=0)
    idle: int = Field(ge=0)


class Jobs(_Doc):
    queued: int = Field(ge=0)
    running: int = Field(ge=0)


class PartitionLive(_Doc):
    name: str
    nodes: Counts
    cores: Counts
    gpus: list[GpuUse] = Field(default_factory=list)
    jobs: Jobs
    estimated_wait_seconds: float | None = None


class Live(_Doc):
    """The scheduler's view now, from one batched query, cached for `cache_ttl`."""

    status: Literal["ok", "stale", "unavailable"] = Field(
        description="stale: the last answer is shown because the center does not answer now"
    )
    error: str | None = None
    queried_at: datetime | None = None
    age_seconds: float | None = None
    nodes: Counts | None = None
    cores: Counts | None = None
    gpus: list[GpuUse] = Field(default_factory=list)
    jobs: Jobs | None = None
    estimated_wait_seconds: float | None = Field(
        None, description="the scheduler's estimate for a job queued now, in the default partition"
    )
    partitions: list[PartitionLive] = Field(default_factory=list)


class PriceDoc(_Doc):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    core_hour: float = Field(ge=0)
    gpu_hour: float = Field(ge=0)


class Energy(_Doc):
    pue: float = Field(ge=1)
    green_share: float = Field(ge=0, le=1)
    carbon_intensity_g_per_kwh: float = Field(ge=0)


class Availability(_Doc):
    """Share of the gateway's probes of the center that it answered."""

    window_seconds: float = Field(gt=0)
    probes: int = Field(ge=0)
    successes: int = Field(ge=0)
    ratio: float | None = Field(None, ge=0, le=1, description="None: no probe yet")
    last_probe_at: datetime | None = None
    last_success_at: datetime | None = None


class Bandwidth(_Doc):
    upload_mb_s: float = Field(ge=0)
    download_mb_s: float = Field(ge=0)
    measured_at: datetime
    evaluation_id: str


class Data(_Doc):
    roots: list[str]
    bandwidth: Bandwidth | None = None


class Admission(_Doc):
    admitted: bool
    reason: str
    evaluation_id: str | None = None
    score: float | None = None
    evaluated_at: datetime | None = None


class Application(_Doc):
    """One application version the center offers (maps to a GLUE 2
    ApplicationEnvironment: name -> AppName, version -> AppVersion, state ->
    State, verified_at -> the time of the last successful canary)."""

    name: str
    version: str
    state: Literal["verified", "failed", "unverified"] = Field(
        description="the latest canary of the binding: passed, failed, or none yet"
    )
    verified_at: datetime | None = None
    checked_at: datetime | None = None
    partitions: list[str] = Field(default_factory=list, description="empty: every partition")


class ComputingPower(_Doc):
    """The standard computing-power descriptor of one center."""

    model_config = ConfigDict(
        extra="forbid",
        title="hpcfed computing-power descriptor",
        json_schema_extra={"$id": SCHEMA_ID},
    )

    descriptor_version: Literal["1.0"] = DESCRIPTOR_VERSION
    generated_at: datetime
    center: CenterIdentity
    partitions: list[Partition]
    peak: Peak
    measured: Measured | None = None
    live: Live
    price: PriceDoc
    energy: Energy
    availability: Availability
    data: Data
    admission: Admission
    applications: list[Application] = Field(
        default_factory=list, description="the applications of the catalog offered here"
    )


def descriptor_schema() -> str:
    """The JSON Schema of the descriptor, as committed in configs/schema/."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    schema.update(ComputingPower.model_json_schema())
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


@cache
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    """What in `document` breaks the committed schema file (empty: it validates)."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
