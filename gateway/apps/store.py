"""The AppStore contract: the application definitions admins manage through the API
(those of configs/apps/ are files, not kept here), and the canary verifications of
each center's bindings, one current row per (center, app, version).

Documents and evidence are JSON objects, kept as written (key order, any unicode,
NUL included); a text field (`Verification.message`) holds no NUL: one comes back
as U+FFFD.

Errors: a failing call raises StoreError (StoreUnavailable when the engine cannot
be reached) and writes nothing; so does a document or evidence that is not JSON.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.store.contract import Store, StoreError, StoreUnavailable

__all__ = [
    "VERIFICATION_STATES",
    "AppStore",
    "StoreError",
    "StoreUnavailable",
    "StoredDefinition",
    "Verification",
    "VerificationState",
    "dump_json",
    "plain_text",
]

VerificationState = Literal["verified", "failed"]
VERIFICATION_STATES: tuple[VerificationState, ...] = ("verified", "failed")


@dataclass(frozen=True)
class StoredDefinition:
    """An application definition as the store keeps it: `document` is the JSON object
    put, `revision` 1 when first put and one more on each put since (a definition
    deleted and put again starts at 1), `updated_at` the time of the last put (UTC)."""

    name: str
    document: dict[str, Any]
    updated_by: str
    updated_at: datetime
    revision: int


@dataclass(frozen=True)
class Verification:
    """The latest canary outcome of one binding: the app's `version` at `center`.
    `checked_at` must be aware (it is kept in UTC); `evaluation_id` names the run
    behind it, if any; `evidence` is a JSON object (what the checks found)."""

    center: str
    app: str
    version: str
    state: VerificationState
    checked_at: datetime
    evaluation_id: str | None = None
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in VERIFICATION_STATES:
            raise ValueError(f"state: one of {', '.join(VERIFICATION_STATES)}, not {self.state!r}")
        if self.checked_at.tzinfo is None or self.checked_at.utcoffset() is None:
            raise ValueError("checked_at: an aware datetime")
        object.__setattr__(self, "checked_at", self.checked_at.astimezone(UTC))

    @property
    def key(self) -> tuple[str, str, str]:
        """(center, app, version): what a verification replaces the one of."""
        return (self.center, self.app, self.version)


def dump_json(value: Any, what: str) -> str:
    """`value`, a JSON object, as the text a backend keeps; StoreError if it is none."""
    if not isinstance(value, dict):
        raise StoreError(f"{what}: a JSON object, not {type(value).__name__}")
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what}: not JSON: {exc}") from exc


def plain_text(value: str) -> str:
    """A text field as every backend keeps it: NUL, which PostgreSQL text cannot
    hold, becomes U+FFFD."""
    return value.replace("\0", "\ufffd")


class AppStore(Store):
    # Definitions managed through the API.

    @abc.abstractmethod
    async def put_definition(
        self, name: str, document: dict[str, Any], updated_by: str
    ) -> StoredDefinition:
        """Keep `document` as the definition `name` (new, or replacing it: the
        revision goes up by one), at the current time; return it as stored."""

    @abc.abstractmethod
    async def get_definition(self, name: str) -> StoredDefinition | None: ...

    @abc.abstractmethod
    async def list_definitions(self) -> list[StoredDefinition]:
        """Every stored definition, by name (bytewise)."""

    @abc.abstractmethod
    async def delete_definition(self, name: str) -> bool:
        """Remove the definition; False if there was none."""

    # Canary verifications.

    @abc.abstractmethod
    async def record_verification(self, verification: Verification) -> None:
        """Keep `verification` as the current one of its (center, app, version),
        replacing what was there."""

    @abc.abstractmethod
    async def verifications(
        self, *, center: str | None = None, app: str | None = None
    ) -> list[Verification]:
        """The current verifications, of `center` and of `app` when given, ordered by
        app, version, center (bytewise)."""

    @abc.abstractmethod
    async def forget_verifications(self, center: str, keep: Collection[tuple[str, str]]) -> int:
        """Remove the center's verifications whose (app, version) is not in `keep`
        (bindings no longer in its config); return how many went."""
