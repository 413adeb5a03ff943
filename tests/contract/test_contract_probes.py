"""The ProbeStore contract, over every implementation (tests/contract/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

from gateway.centers.probes import RECENT_ERRORS, ProbeStore
from gateway.units import utcnow


async def test_stats_count_every_kind_since_a_time(probe_store: ProbeStore) -> None:
    await probe_store.ping()
    empty = await probe_store.stats("centera", utcnow() - timedelta(days=1))
    assert (empty.probes, empty.successes, empty.ratio, empty.last_error) == (0, 0, None, None)
    before = utcnow()
    await probe_store.record("centera", "load", True, 12.0, None)
    await probe_store.record("centera", "ssh", False, None, "refused")
    await probe_store.record("centera", "ssh", True, 4.0, None)
    await probe_store.record("centerb", "ssh", False, None, "elsewhere")
    stats = await probe_store.stats("centera", before - timedelta(seconds=1))
    assert (stats.probes, stats.successes, stats.last_error) == (3, 2, "refused")
    assert stats.ratio == 2 / 3
    assert stats.last_probe_at is not None and stats.last_success_at is not None
    assert before - timedelta(seconds=1) <= stats.last_success_at <= stats.last_probe_at
    later = await probe_store.stats("centera", utcnow() + timedelta(seconds=1))
    assert (later.probes, later.successes, later.last_probe_at) == (0, 0, None)
    assert later.last_error == "refused"  # the latest failure, however old


async def test_a_window_holds_its_kinds_since_a_time(probe_store: ProbeStore) -> None:
    since = utcnow() - timedelta(seconds=1)
    for latency in (30.0, 10.0, 20.0):
        await probe_store.record("centera", "ssh", True, latency, None)
    await probe_store.record("centera", "ssh", False, 99.0, "timed out")  # a failure's latency
    await probe_store.record("centera", "scheduler", False, None, "no answer")
    await probe_store.record("centera", "load", False, None, "not a health kind")
    await probe_store.record("centerb", "ssh", False, None, "elsewhere")
    window = await probe_store.window("centera", ("ssh", "scheduler", "storage"), since)
    assert (window.probes, window.failures) == (5, 2)
    assert window.error_rate == 2 / 5
    assert window.ssh_latencies_ms == [10.0, 20.0, 30.0]  # good SSH ones, ascending
    assert window.ssh_percentile(0.5) == 20.0
    assert [(e.kind, e.error) for e in window.recent_errors] == [
        ("scheduler", "no answer"),
        ("ssh", "timed out"),
    ]
    assert window.recent_errors[0].at >= window.recent_errors[1].at
    only_scheduler = await probe_store.window("centera", ("scheduler",), since)
    assert (only_scheduler.probes, only_scheduler.failures) == (1, 1)
    assert only_scheduler.ssh_latencies_ms == []
    later = await probe_store.window("centera", ("ssh",), utcnow() + timedelta(seconds=1))
    assert (later.probes, later.failures, later.error_rate) == (0, 0, None)
    assert [e.error for e in later.recent_errors] == ["timed out"]  # however old


async def test_a_window_lists_the_latest_errors_newest_first(probe_store: ProbeStore) -> None:
    for n in range(RECENT_ERRORS + 3):
        await probe_store.record("centera", "ssh", False, None, f"failure {n}")
    window = await probe_store.window("centera", ("ssh",), utcnow() - timedelta(days=1))
    assert [e.error for e in window.recent_errors] == [
        f"failure {n}" for n in reversed(range(3, RECENT_ERRORS + 3))
    ]
