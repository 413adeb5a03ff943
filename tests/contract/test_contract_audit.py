"""The AuditTrail contract, over every implementation (tests/contract/conftest.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from gateway.identity.audit import AuditError, AuditTrail
from tests.contract.conftest import Backend


def test_entries_come_back_in_order_with_the_standard_fields(audit_trail: AuditTrail) -> None:
    audit_trail.record(
        action="jobs.submit",
        actor="alice",
        roles=["researcher", "admin"],
        target={"job": "j-1"},
        outcome="ok",
        status=201,
        source="10.0.0.7",
    )
    audit_trail.record(action="jobs.cancel", actor=None, outcome="denied", source="cli")
    first, second = audit_trail.entries()
    assert first.pop("time") <= second.pop("time")
    assert first == {
        "actor": "alice",
        "roles": ["admin", "researcher"],
        "action": "jobs.submit",
        "target": {"job": "j-1"},
        "outcome": "ok",
        "status": 201,
        "source": "10.0.0.7",
    }
    assert second == {"roles": [], "action": "jobs.cancel", "outcome": "denied", "source": "cli"}


def test_details_are_kept_as_plain_json(audit_trail: AuditTrail) -> None:
    audit_trail.record(
        action="vault.put",
        actor="root",
        outcome="ok",
        source="cli",
        error="none\nreally",
        entry="ssh/centera/alice",
        at=datetime(2026, 1, 2),
        path=Path("/x"),
        counts={"a": [1, (2, None)]},
    )
    (entry,) = audit_trail.entries()
    assert entry["error"] == "none\nreally" and entry["entry"] == "ssh/centera/alice"
    assert entry["at"] == "2026-01-02 00:00:00" and entry["path"] == "/x"
    assert entry["counts"] == {"a": [1, [2, None]]}
    with pytest.raises(TypeError, match="time"):
        audit_trail.record(action="x", actor=None, outcome="ok", source="cli", time="now")
    assert len(audit_trail.entries()) == 1


def test_after_close_nothing_is_recorded(audit_trail: AuditTrail) -> None:
    audit_trail.record(action="one", actor=None, outcome="ok", source="cli")
    audit_trail.close()
    with pytest.raises(AuditError):
        audit_trail.record(action="two", actor=None, outcome="ok", source="cli")
    audit_trail.close()  # twice is fine


def test_a_second_trail_at_the_same_place_appends_after_the_first(audit_backend: Backend) -> None:
    with audit_backend.make() as first:
        first.record(action="one", actor=None, outcome="ok", source="gateway")
        with audit_backend.make() as second:  # e.g. the CLI while the gateway runs
            second.record(action="two", actor=None, outcome="ok", source="cli")
            first.record(action="three", actor=None, outcome="ok", source="gateway")
            assert [e["action"] for e in second.entries()] == ["one", "two", "three"]
