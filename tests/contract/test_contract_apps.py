"""The AppStore contract, over every implementation (tests/contract/conftest.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.apps.store import AppStore, StoredDefinition, StoreError, Verification
from gateway.units import utcnow
from tests.contract.conftest import Backend


def document(name: str = "lammps", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "molecular dynamics",
        "versions": ["7Jan2022"],
        "parameters": {"steps": {"type": "int", "default": 250, "min": 1}},
        "run": {"executable": "lmp", "commands": [["{executable}", "-in", "{input}"]]},
        **fields,
    }


def verification(
    center: str = "centera",
    app: str = "lammps",
    version: str = "7Jan2022",
    state: str = "verified",
    **fields: Any,
) -> Verification:
    fields.setdefault("checked_at", utcnow())
    return Verification(center=center, app=app, version=version, state=state, **fields)  # type: ignore[arg-type]


async def test_a_definition_reads_back_as_it_was_put(app_store: AppStore) -> None:
    await app_store.ping()
    assert await app_store.get_definition("lammps") is None
    assert await app_store.list_definitions() == []
    doc = document()
    before = utcnow()
    stored = await app_store.put_definition("lammps", doc, "root")
    assert isinstance(stored, StoredDefinition)
    assert (stored.name, stored.document, stored.updated_by, stored.revision) == (
        "lammps",
        doc,
        "root",
        1,
    )
    assert stored.updated_at.tzinfo is not None
    assert before <= stored.updated_at <= utcnow()
    assert await app_store.get_definition("lammps") == stored
    doc["description"] = "changed after the put"  # not stored until put again
    again = await app_store.get_definition("lammps")
    assert again is not None and again.document["description"] == "molecular dynamics"
    assert await app_store.get_definition("gromacs") is None


async def test_putting_a_definition_again_replaces_it_and_counts_the_revision(
    app_store: AppStore,
) -> None:
    first = await app_store.put_definition("lammps", document(), "root")
    await app_store.put_definition("hpcc", document("hpcc"), "root")
    second = await app_store.put_definition(
        "lammps", document(versions=["7Jan2022", "2Aug2023"]), "admin2"
    )
    assert second.revision == 2
    assert second.updated_by == "admin2"
    assert second.document["versions"] == ["7Jan2022", "2Aug2023"]
    assert second.updated_at >= first.updated_at
    assert await app_store.get_definition("lammps") == second
    third = await app_store.put_definition("lammps", {"name": "lammps"}, "root")
    assert third.revision == 3
    assert third.document == {"name": "lammps"}  # replaced whole, not merged
    assert await app_store.get_definition("lammps") == third
    other = await app_store.get_definition("hpcc")
    assert other is not None and other.revision == 1  # its own count


async def test_a_deleted_definition_is_gone(app_store: AppStore) -> None:
    await app_store.put_definition("lammps", document(), "root")
    await app_store.put_definition("lammps", document(), "root")
    await app_store.put_definition("hpcc", document("hpcc"), "root")
    assert await app_store.delete_definition("lammps") is True
    assert await app_store.get_definition("lammps") is None
    assert [d.name for d in await app_store.list_definitions()] == ["hpcc"]
    assert await app_store.delete_definition("lammps") is False
    assert await app_store.delete_definition("never") is False
    anew = await app_store.put_definition("lammps", document(), "root")
    assert anew.revision == 1  # a new definition starts its count again


async def test_definitions_are_listed_by_name_bytewise(app_store: AppStore) -> None:
    names = ["lammps", "Gromacs", "hpcc", "a_b", "a-b", "Zeta", "a"]
    for name in names:
        await app_store.put_definition(name, document(name), "root")
    listed = await app_store.list_definitions()
    assert [d.name for d in listed] == ["Gromacs", "Zeta", "a", "a-b", "a_b", "hpcc", "lammps"]
    assert [d.document["name"] for d in listed] == [d.name for d in listed]
    assert listed == [await app_store.get_definition(d.name) for d in listed]


async def test_a_document_is_kept_as_written(app_store: AppStore) -> None:
    doc = {
        "zeta": 1,
        "alpha": {"nested": [1, 2.5, True, None, "é"]},
        "description": "Molekulardynamik — 分子動力学 🧪",
        "nul": "a\0b",
        "big": 2**53 + 1,
        "empty": {},
    }
    stored = await app_store.put_definition("ünïcode", doc, "root")
    read = await app_store.get_definition("ünïcode")
    assert read is not None and read.document == doc == stored.document
    assert list(read.document) == list(doc)  # the keys in the order they were written
    assert [d.name for d in await app_store.list_definitions()] == ["ünïcode"]


@pytest.mark.parametrize(
    "bad",
    [{"x": {1, 2}}, {"x": math.nan}, {"x": object()}, ["not", "an", "object"]],
    ids=["set", "nan", "object", "list"],
)
async def test_a_document_that_is_not_a_json_object_is_refused(
    app_store: AppStore, bad: Any
) -> None:
    kept = await app_store.put_definition("lammps", document(), "root")
    with pytest.raises(StoreError):
        await app_store.put_definition("lammps", bad, "root")
    with pytest.raises(StoreError):
        await app_store.put_definition("other", bad, "root")
    assert await app_store.get_definition("lammps") == kept  # nothing written
    assert await app_store.get_definition("other") is None


async def test_a_verification_reads_back_as_it_was_recorded(app_store: AppStore) -> None:
    assert await app_store.verifications() == []
    v = verification(
        evaluation_id="ev-1",
        message="all checks passed",
        evidence={"checks": [{"file": "log.lammps", "value": -6.7733681, "ok": True}]},
    )
    await app_store.record_verification(v)
    assert await app_store.verifications() == [v]
    got = (await app_store.verifications())[0]
    assert got.checked_at == v.checked_at and got.checked_at.utcoffset() == timedelta(0)
    bare = verification(center="centerb", state="failed")
    await app_store.record_verification(bare)
    assert (await app_store.verifications(center="centerb")) == [bare]
    assert (bare.evaluation_id, bare.message, bare.evidence) == (None, "", {})


async def test_a_verification_replaces_the_one_of_its_key(app_store: AppStore) -> None:
    old = verification(evaluation_id="ev-1", message="ok", evidence={"n": 1})
    other_version = verification(version="2Aug2023")
    other_center = verification(center="centerb")
    for v in (old, other_version, other_center):
        await app_store.record_verification(v)
    new = verification(
        state="failed",
        checked_at=old.checked_at + timedelta(minutes=5),
        evaluation_id=None,
        message="log.lammps: no line matched",
        evidence={"checks": [{"ok": False}]},
    )
    await app_store.record_verification(new)
    found = await app_store.verifications()
    assert found == [other_version, new, other_center]  # by app, version, center
    assert [v.key for v in found] == [
        ("centera", "lammps", "2Aug2023"),
        ("centera", "lammps", "7Jan2022"),
        ("centerb", "lammps", "7Jan2022"),
    ]


async def test_verifications_are_ordered_and_filtered(app_store: AppStore) -> None:
    recorded = [
        verification("centerb", "lammps", "7Jan2022"),
        verification("centera", "lammps", "7Jan2022"),
        verification("centerc", "hpcc", "1.5.0"),
        verification("centera", "lammps", "2Aug2023", state="failed"),
        verification("centera", "hpcc", "1.5.0"),
        verification("centerb", "gromacs", "2022.5"),
    ]
    for v in recorded:
        await app_store.record_verification(v)
    keys = [(v.app, v.version, v.center) for v in await app_store.verifications()]
    assert keys == [
        ("gromacs", "2022.5", "centerb"),
        ("hpcc", "1.5.0", "centera"),
        ("hpcc", "1.5.0", "centerc"),
        ("lammps", "2Aug2023", "centera"),
        ("lammps", "7Jan2022", "centera"),
        ("lammps", "7Jan2022", "centerb"),
    ]
    assert keys == sorted((v.app, v.version, v.center) for v in recorded)
    by_center = await app_store.verifications(center="centera")
    assert [(v.app, v.version) for v in by_center] == [
        ("hpcc", "1.5.0"),
        ("lammps", "2Aug2023"),
        ("lammps", "7Jan2022"),
    ]
    by_app = await app_store.verifications(app="lammps")
    assert [(v.version, v.center) for v in by_app] == [
        ("2Aug2023", "centera"),
        ("7Jan2022", "centera"),
        ("7Jan2022", "centerb"),
    ]
    both = await app_store.verifications(center="centerb", app="lammps")
    assert [v.key for v in both] == [("centerb", "lammps", "7Jan2022")]
    assert await app_store.verifications(center="centerb", app="hpcc") == []
    assert await app_store.verifications(center="nowhere") == []
    assert await app_store.verifications(app="nothing") == []


async def test_forgetting_removes_the_centers_verifications_not_kept(
    app_store: AppStore,
) -> None:
    for center, app, version in [
        ("centera", "lammps", "7Jan2022"),
        ("centera", "lammps", "1.5.0"),
        ("centera", "hpcc", "1.5.0"),
        ("centera", "hpcc", "7Jan2022"),
        ("centerb", "lammps", "1.5.0"),
        ("centerb", "hpcc", "1.5.0"),
    ]:
        await app_store.record_verification(verification(center, app, version))
    # Pairs, not apps and versions apart: (lammps, 1.5.0) and (hpcc, 7Jan2022) go.
    gone = await app_store.forget_verifications(
        "centera", {("lammps", "7Jan2022"), ("hpcc", "1.5.0"), ("absent", "1")}
    )
    assert gone == 2
    assert [v.key for v in await app_store.verifications()] == [
        ("centera", "hpcc", "1.5.0"),
        ("centerb", "hpcc", "1.5.0"),
        ("centerb", "lammps", "1.5.0"),  # another center's: untouched
        ("centera", "lammps", "7Jan2022"),
    ]
    assert await app_store.forget_verifications("centera", {("lammps", "7Jan2022")}) == 1
    assert await app_store.forget_verifications("centera", {("lammps", "7Jan2022")}) == 0
    assert await app_store.forget_verifications("centera", set()) == 1
    assert await app_store.verifications(center="centera") == []
    assert await app_store.forget_verifications("nowhere", set()) == 0
    assert len(await app_store.verifications(center="centerb")) == 2


async def test_evidence_is_kept_as_written_and_a_message_holds_no_nul(
    app_store: AppStore,
) -> None:
    evidence = {
        "zeta": "last key first",
        "log": "Step Temp E_pair\n0 3 -6.7733681 — ∆ 分子 🧪",
        "nul": "before\0after",
        "values": [-6.7733681, 1e-4, 2**53 + 1, None, False],
        "nested": {"ü": {"deeper": []}},
    }
    v = verification(message="Prüfung — ok\0tail", evidence=evidence)
    await app_store.record_verification(v)
    (got,) = await app_store.verifications()
    assert got.evidence == evidence
    assert list(got.evidence) == list(evidence)
    assert got.message == "Prüfung — ok\ufffdtail"


async def test_evidence_that_is_not_json_is_refused_and_writes_nothing(
    app_store: AppStore,
) -> None:
    kept = verification(evidence={"n": 1})
    await app_store.record_verification(kept)
    for bad in ({"x": math.inf}, {"x": {1}}, {"x": b"bytes"}):
        with pytest.raises(StoreError):
            await app_store.record_verification(verification(state="failed", evidence=bad))
        with pytest.raises(StoreError):
            await app_store.record_verification(verification(center="new", evidence=bad))
    assert await app_store.verifications() == [kept]


async def test_a_second_store_on_the_same_database_sees_the_writes(
    app_backend: Backend,
) -> None:
    first, second = app_backend.make(), app_backend.make()
    await first.open()
    await second.open()
    try:
        put = await first.put_definition("lammps", document(), "root")
        assert await second.get_definition("lammps") == put
        replaced = await second.put_definition("lammps", document(description="v2"), "bob")
        assert replaced.revision == 2
        assert await first.get_definition("lammps") == replaced
        v = verification(evidence={"ok": "ja ✓"})
        await first.record_verification(v)
        assert await second.verifications() == [v]
        await second.record_verification(verification(center="centerb"))
        assert await second.forget_verifications("centera", set()) == 1
        assert [x.center for x in await first.verifications()] == ["centerb"]
        assert await second.delete_definition("lammps") is True
        assert await first.list_definitions() == []
    finally:
        await first.close()
        await second.close()


async def test_definitions_and_verifications_outlive_the_store_object(
    app_backend: Backend,
) -> None:
    first = app_backend.make()
    await first.open()
    put = await first.put_definition("hpcc", document("hpcc"), "root")
    v = verification(app="hpcc", version="1.5.0", evidence={"gflops": 1.25})
    await first.record_verification(v)
    await first.close()
    second = app_backend.make()
    await second.open()
    try:
        assert await second.list_definitions() == [put]
        assert await second.verifications(app="hpcc") == [v]
    finally:
        await second.close()


def test_a_verification_is_checked_when_made() -> None:
    at = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    v = verification(checked_at=at)
    assert v.checked_at == at and v.checked_at.tzinfo is UTC
    assert v.checked_at.hour == 12
    with pytest.raises(ValueError, match="aware"):
        verification(checked_at=datetime(2024, 5, 1, 12, 0))
    with pytest.raises(ValueError, match="state"):
        verification(state="maybe")
