"""The per-center health state machine: thresholds, since, degraded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.pbs.commands import ping_command
from adapters.slurm.adapter import slurmctld_up
from gateway.centers.health import (
    DEGRADED,
    DOWN,
    UNKNOWN,
    UP,
    CenterHealth,
    Check,
    Probe,
    federation_status,
)
from gateway.centers.probes import ProbeWindow
from gateway.centers.submissions import FailingSubmissions
from gateway.config_models import HealthConfig

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def probe(n: int, *, ssh: bool = True, scheduler: bool = True, storage: bool = True) -> Probe:
    return Probe(
        T0 + timedelta(seconds=n),
        Check(ssh, 3.0 if ssh else None, None if ssh else "connection refused"),
        Check(scheduler, None, None if scheduler else "scontrol ping: DOWN"),
        Check(storage, None, None if storage else "/scratch: not found"),
    )


def health(**config: object) -> CenterHealth:
    return CenterHealth(HealthConfig(**config))  # type: ignore[arg-type]


def test_center_is_unknown_before_its_first_probe() -> None:
    h = health()
    assert (h.state, h.since, h.last_probe) == (UNKNOWN, None, None)


def test_first_good_probe_makes_the_center_up_since_that_probe() -> None:
    h = health()
    assert h.observe(probe(0), 3.0) == UP
    assert (h.state, h.since) == (UP, T0)


def test_down_only_after_down_after_consecutive_failures() -> None:
    h = health(down_after=2)
    h.observe(probe(0), 3.0)
    assert h.observe(probe(1, scheduler=False), 3.0) is None
    assert h.state == UP
    assert h.observe(probe(2, scheduler=False), 3.0) == DOWN
    assert (h.state, h.since) == (DOWN, T0 + timedelta(seconds=2))
    assert h.last_error == "scheduler: scontrol ping: DOWN"
    assert h.observe(probe(3, ssh=False), None) is None  # still down, since unchanged
    assert h.since == T0 + timedelta(seconds=2)


def test_a_good_probe_between_failures_resets_the_count() -> None:
    h = health(down_after=2)
    h.observe(probe(0), 3.0)
    h.observe(probe(1, ssh=False), None)
    h.observe(probe(2), 3.0)
    assert h.observe(probe(3, ssh=False), None) is None
    assert h.state == UP


def test_up_again_only_after_up_after_good_probes() -> None:
    h = health(down_after=1, up_after=3)
    h.observe(probe(0, ssh=False), None)
    assert h.state == DOWN
    assert h.observe(probe(1), 3.0) is None
    assert h.observe(probe(2), 3.0) is None
    assert h.observe(probe(3), 3.0) == UP
    assert h.since == T0 + timedelta(seconds=3)


def test_an_unreadable_storage_root_degrades_but_never_downs() -> None:
    h = health(down_after=1)
    h.observe(probe(0), 3.0)
    for n in range(1, 4):
        h.observe(probe(n, storage=False), 3.0)
    assert (h.state, h.since) == (DEGRADED, T0 + timedelta(seconds=1))
    assert h.why == "storage: /scratch: not found"
    assert h.observe(probe(4), 3.0) == UP


def test_slow_ssh_median_degrades() -> None:
    h = health(degraded_latency_ms=100)
    assert h.observe(probe(0), 150.0) == DEGRADED
    assert h.why is not None and "150.0 ms" in h.why
    assert h.observe(probe(1), 99.0) == UP


def test_federation_status_is_down_only_when_every_center_is() -> None:
    assert federation_status([UP, UP]) == UP
    assert federation_status([UP, DOWN]) == DEGRADED
    assert federation_status([UP, UNKNOWN]) == DEGRADED
    assert federation_status([DOWN, DOWN]) == DOWN


def test_probe_window_percentiles_and_error_rate() -> None:
    window = ProbeWindow(10, 2, [1.0, 2.0, 3.0, 4.0, 100.0], [])
    assert window.ssh_percentile(0.5) == 3.0
    assert window.ssh_percentile(0.95) == 100.0
    assert window.error_rate == 0.2
    assert ProbeWindow(0, 0, [], []).error_rate is None
    assert ProbeWindow(0, 0, [], []).ssh_percentile(0.5) is None


def test_scheduler_ping_commands_and_their_reading() -> None:
    assert slurmctld_up("Slurmctld(primary) at vm is UP\n")
    assert not slurmctld_up("Slurmctld(primary) at vm is DOWN\n")
    assert (ping_command("torque"), ping_command("pbspro")) == ("qstat -Q", "qstat -B")


def test_failing_submissions_degrade_a_center_whose_probes_pass() -> None:
    h = health(degraded_after_failed_submissions=3)
    assert h.observe(probe(0), 3.0) == "up"
    two = FailingSubmissions(2, T0.timestamp(), "center centera did not answer within 30s")
    assert h.observe(probe(1), 3.0, two) is None  # fewer than the threshold
    three = FailingSubmissions(3, T0.timestamp(), "center centera did not answer within 30s")
    assert h.observe(probe(2), 3.0, three) == "degraded"
    assert h.why == (
        "3 submissions in a row failed since 00:00:00Z: center centera did not answer within 30s"
    )
    assert h.observe(probe(3), 3.0, None) == "up"  # one went through


def test_a_down_center_stays_down_whatever_its_submissions() -> None:
    h = health(down_after=1)
    failing = FailingSubmissions(5, T0.timestamp(), "no answer")
    assert h.observe(probe(0, scheduler=False), None, failing) == "down"
