"""Transfers between centers: the request a client sends and the record kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
)

from gateway.fields import CenterPath, _Verbatim

TransferState = Literal["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


TRANSFER_TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


class TransferRequest(_Verbatim):
    source: CenterPath
    destination: CenterPath
    overwrite: bool = False


class TransferFile(BaseModel):
    path: str
    size: int
    sha256: str | None = None
    state: str = "pending"
    attempts: int = 0
    error: str | None = None


class TransferRecord(BaseModel):
    id: str
    owner: str
    state: TransferState = "QUEUED"
    source: CenterPath
    destination: CenterPath
    overwrite: bool = False
    bytes_total: int = 0
    bytes_done: int = 0
    files_total: int = 0
    files_done: int = 0
    files: list[TransferFile] = Field(default_factory=list)
    attempts: int = 0
    error: str | None = None
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TRANSFER_TERMINAL

    def public(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"cancel_requested"})
        data["terminal"] = self.terminal
        return data
