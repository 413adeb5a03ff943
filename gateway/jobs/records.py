"""The job record the gateway keeps: state, native id and state, staging, placement
decision, usage, array elements; and how a record is written for a client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
)

from adapters.base import JobState
from gateway.fields import (
    CenterPath,
)
from gateway.jobs.models import JobSpec


class ElementRecord(BaseModel):
    """One element of an array job."""

    index: int
    native_id: str | None = None
    state: JobState
    native_state: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None  # as the center tells it
    ended_at: datetime | None = None


class StagedFile(BaseModel):
    """How one input or output of a job fared."""

    index: int
    path: str | None = None  # where it is (inputs) or was found (outputs) at the job's center
    state: Literal["pending", "waiting_upload", "done", "failed"] = "pending"
    size: int | None = None
    sha256: str | None = None
    copied_to: CenterPath | None = None
    error: str | None = None


class Staging(BaseModel):
    inputs: list[StagedFile] = Field(default_factory=list)
    outputs: list[StagedFile] = Field(default_factory=list)
    #: The state the center reported while outputs were still being collected.
    final_state: JobState | None = None
    collected: bool = False  # outputs collected (or none to collect)


class CandidateScore(BaseModel):
    """How one center fared in a placement decision."""

    center: str
    eligible: bool
    #: Why it could not take the job (each naming the spec field), when not eligible.
    refused: list[str] = Field(default_factory=list)
    partition: str | None = None
    estimated_wait_seconds: float | None = None
    cost: float | None = None  # of the whole request at its walltime, in `currency`
    currency: str | None = None
    carbon_g: float | None = None  # estimated gCO2e of the whole request
    inputs_here: int | None = None  # how many of the job's inputs are already there
    score: float | None = None  # 0..1, higher is better


class PlacementDecision(BaseModel):
    """Why `center: auto` chose where the job went."""

    chosen: str
    prefer: list[str]
    explanation: str
    candidates: list[CandidateScore] = Field(default_factory=list)
    decided_at: datetime


class Price(BaseModel):
    currency: str
    core_hour: float
    gpu_hour: float


class JobUsage(BaseModel):
    """What a job used and cost, at the price in force when it ran."""

    cores: int
    gpus: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    wall_seconds: float = 0.0
    core_hours: float = 0.0
    gpu_hours: float = 0.0
    price: Price
    cost: float = 0.0
    #: "center": times the center reported; "gateway": times the gateway saw.
    source: Literal["center", "gateway"] = "center"


class AppRun(BaseModel):
    """What a job of an application runs: the version its center offers, the
    parameters' values (defaults filled in), and the script written for that center."""

    name: str
    version: str
    parameters: dict[str, int | float | bool | str] = Field(default_factory=dict)
    modules: list[str] = Field(default_factory=list)
    executable: str
    outputs: list[str] = Field(default_factory=list)
    script: str


class JobRecord(BaseModel):
    """A job as the gateway stores and serves it."""

    id: str
    owner: str
    center: str
    #: The login the job runs as at its center (None at the local center).
    login: str | None = None
    spec: JobSpec
    state: JobState
    native_id: str | None = None
    native_state: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    idempotency_key: str | None = None
    elements: list[ElementRecord] = Field(default_factory=list)
    staging: Staging = Field(default_factory=Staging)
    placement: PlacementDecision | None = None
    #: A job of an application (`spec.app`): what it runs at its center.
    application: AppRun | None = None
    #: The GA4GH TES task the job was created from (gateway/tes), as the gateway keeps
    #: it: the task document, and its executors' logs once read back.
    task: dict[str, Any] | None = None
    #: The price of the center when the job was sent there (billed at it).
    price: Price | None = None
    usage: JobUsage | None = None
    started_at: datetime | None = None
    cancel_requested: bool = False
    submit_attempts: int = 0
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    finished_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        """The JSON shape served by the API."""
        data = self.model_dump(mode="json", exclude={"submit_attempts"})
        data["terminal"] = self.state.is_terminal
        return data

    def public_json(self) -> bytes:
        """`public()` as JSON text (UTF-8), serialized by pydantic in one pass."""
        body = self.model_dump_json(exclude=_PRIVATE_JOB_FIELDS)
        # A model's JSON is an object: `terminal` goes last, as in public().
        return body[:-1].encode() + (_TERMINAL_TRUE if self.state.is_terminal else _TERMINAL_FALSE)


_PRIVATE_JOB_FIELDS: set[str] = {"submit_attempts"}


_TERMINAL_TRUE = b',"terminal":true}'


_TERMINAL_FALSE = b',"terminal":false}'
