"""Per-center health probes, the circuit breaker, and the federation's health.

Every `probe_interval` the monitor probes every center side by side, each
check bounded by `probe_timeout`: an SSH round trip (`true`) as the center's
service login, the scheduler's own ping (`Adapter.ping`), and a stat of each
storage root. Outcomes go to the probes table; a small state machine per
center turns them into up / degraded / down. While a center is down,
`Center.down` is set, and `Center.require_available()` refuses requests that
need it at once (center_unavailable) instead of letting them hang.

Among replicas sharing a store, a center is probed only by the replica holding
its lease (gateway/centers/ownership.py). The others follow it: each round they
read the outcomes recorded since their last round and feed them to the same
state machine as one probe, so their breaker, placement and /v1/health speak
from what the owner saw, a round later at most.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.base import JobState
from adapters.batch.adapter import JobDirAdapter
from adapters.errors import AdapterError
from adapters.files.paths import PathRefused
from gateway.centers.configured import Center, CenterRegistry
from gateway.centers.ownership import CenterOwnership
from gateway.centers.probes import ProbeStore
from gateway.centers.submissions import FailingSubmissions
from gateway.config_models import HealthConfig
from gateway.errors import DomainError
from gateway.jobs.poller import Poller
from gateway.jobs.store import JobStore
from gateway.store.outages import stop
from gateway.units import utcnow

log = logging.getLogger("hpcfed.health")

UNKNOWN, UP, DEGRADED, DOWN = "unknown", "up", "degraded", "down"
#: The probe kinds the monitor records (PowerService records "load" beside them).
KINDS = ("ssh", "scheduler", "storage")


@dataclass(frozen=True)
class Check:
    ok: bool
    latency_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Probe:
    """One round of checks at one center."""

    at: datetime
    ssh: Check
    scheduler: Check
    storage: Check

    @property
    def reachable(self) -> bool:
        """SSH and the scheduler answered: the checks that decide down."""
        return self.ssh.ok and self.scheduler.ok

    @property
    def ok(self) -> bool:
        return self.reachable and self.storage.ok

    def error(self) -> str | None:
        """The first failed check's error, for reasons and logs."""
        for name, check in (("ssh", self.ssh), ("scheduler", self.scheduler)):
            if not check.ok:
                return f"{name}: {check.error}"
        return None if self.storage.ok else f"storage: {self.storage.error}"

    def public(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "ok": self.ok,
            "checks": {
                "ssh": {
                    "ok": self.ssh.ok,
                    "latency_ms": self.ssh.latency_ms,
                    "error": self.ssh.error,
                },
                "scheduler": {"ok": self.scheduler.ok, "error": self.scheduler.error},
                "storage": {"ok": self.storage.ok, "error": self.storage.error},
            },
        }


@dataclass
class CenterHealth:
    """The state machine of one center; pure, fed one probe at a time."""

    config: HealthConfig
    state: str = UNKNOWN
    since: datetime | None = None
    failures: int = 0  # consecutive probes where SSH or the scheduler failed
    successes: int = 0  # consecutive probes where both answered
    last_probe: Probe | None = None
    last_error: str | None = None
    why: str | None = None  # what made it degraded or down

    def observe(
        self,
        probe: Probe,
        ssh_p50_ms: float | None,
        submissions: FailingSubmissions | None = None,
    ) -> str | None:
        """Take one probe (and the window's SSH p50, and the center's run of failed
        submissions); the new state if it changed."""
        self.last_probe = probe
        if probe.error() is not None:
            self.last_error = probe.error()
        if probe.reachable:
            self.failures, self.successes = 0, self.successes + 1
            if self.state in (UNKNOWN, DOWN) and self.successes < self.config.up_after:
                return None
            slow = ssh_p50_ms is not None and ssh_p50_ms > self.config.degraded_latency_ms
            if not probe.storage.ok:
                return self._enter(DEGRADED, probe.at, f"storage: {probe.storage.error}")
            if slow:
                limit = self.config.degraded_latency_ms
                why = f"ssh p50 {ssh_p50_ms:.1f} ms is above {limit:g} ms"
                return self._enter(DEGRADED, probe.at, why)
            failing = self.config.degraded_after_failed_submissions
            if submissions is not None and submissions.count >= failing:
                at = datetime.fromtimestamp(submissions.since, UTC).strftime("%H:%M:%SZ")
                why = (
                    f"{submissions.count} submissions in a row failed since {at}: "
                    f"{submissions.last_error[:300]}"
                )
                return self._enter(DEGRADED, probe.at, why)
            return self._enter(UP, probe.at, None)
        self.successes, self.failures = 0, self.failures + 1
        if self.failures >= self.config.down_after:
            return self._enter(DOWN, probe.at, probe.error())
        return None

    def _enter(self, state: str, at: datetime, why: str | None) -> str | None:
        self.why = why
        if state == self.state:
            return None
        self.state, self.since = state, at
        return state


class HealthMonitor:
    def __init__(
        self,
        centers: CenterRegistry,
        probes: ProbeStore,
        config: HealthConfig,
        store: JobStore,
        poller: Poller | None = None,
        ownership: CenterOwnership | None = None,
    ) -> None:
        self.centers = centers
        #: Which centers this replica probes; None: every center (one gateway alone).
        self.ownership = ownership
        #: Center id -> since when the outcomes of another replica's probes are read.
        self._followed: dict[str, datetime] = {}
        self.probes = probes
        self.config = config
        self.store = store
        self.poller = poller
        self.health = {c.id: CenterHealth(config) for c in centers}
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ the loop

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="health")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.probe_all()
            except Exception:
                log.exception("health probe round failed")
            await asyncio.sleep(max(0.0, self.config.probe_interval - (time.monotonic() - started)))

    async def probe_all(self) -> None:
        await asyncio.gather(
            *(
                self._probe_owned(c)
                if self.ownership is None or self.ownership.owns(c.id)
                else self.follow(c)
                for c in self.centers
            )
        )
        self.rounds += 1

    async def _probe_owned(self, center: Center) -> CenterHealth:
        self._followed.pop(center.id, None)  # followed afresh if it moves to another replica
        return await self.probe(center)

    async def follow(self, center: Center) -> CenterHealth | None:
        """Take what the replica probing `center` recorded since the last round, as one
        probe (nothing new: nothing changes)."""
        now = utcnow()
        since = self._followed.get(center.id, now - timedelta(seconds=self.config.probe_interval))
        reach = await self.probes.window(center.id, ("ssh", "scheduler"), since)
        if reach.probes == 0:
            return None
        storage = await self.probes.window(center.id, ("storage",), since)
        self._followed[center.id] = now
        ssh = scheduler = Check(True, reach.ssh_percentile(0.5))
        if reach.failures and reach.recent_errors:
            last = reach.recent_errors[0]
            if last.kind == "ssh":
                ssh = Check(False, None, last.error)
            else:
                scheduler = Check(False, None, last.error)
        stored = Check(True)
        if storage.failures and storage.recent_errors:
            stored = Check(False, None, storage.recent_errors[0].error)
        return await self.take(center, Probe(now, ssh, scheduler, stored), record=False)

    async def probe(self, center: Center) -> CenterHealth:
        """Probe one center, record the outcomes, and move its state."""
        return await self.take(center, await self._checks(center))

    async def take(self, center: Center, probe: Probe, *, record: bool = True) -> CenterHealth:
        """Record one probe's outcomes (unless `record` is false: another replica's,
        recorded already), move the center's state, set its breaker."""
        if record:
            for kind, check in (("ssh", probe.ssh), ("scheduler", probe.scheduler)):
                if kind == "ssh" and center.is_local:
                    continue  # no SSH at a local center
                await self.probes.record(center.id, kind, check.ok, check.latency_ms, check.error)
            await self.probes.record(
                center.id, "storage", probe.storage.ok, None, probe.storage.error
            )
        window = await self.probes.window(center.id, KINDS, self._window_start())
        health = self.health.setdefault(center.id, CenterHealth(self.config))
        before = health.state
        failing = self.poller.service.outcomes.failing(center.id) if self.poller else None
        changed = health.observe(probe, window.ssh_percentile(0.5), failing)
        if changed is not None:
            level = logging.WARNING if changed in (DOWN, DEGRADED) else logging.INFO
            log.log(
                level,
                "center %s: %s -> %s%s",
                center.id,
                before,
                changed,
                f" ({health.why})" if health.why else "",
            )
        center.down = (
            (health.since or probe.at, health.last_error or "down")
            if health.state == DOWN
            else None
        )
        if changed is not None and self.poller is not None:
            # Down: end its polls under way and mark its jobs now; back: reconcile them now.
            if changed == DOWN:
                self.poller.interrupt(center.id)
            elif before == DOWN:
                self.poller.wake()
        return health

    def _window_start(self) -> datetime:
        return utcnow() - timedelta(seconds=self.config.window)

    async def _checks(self, center: Center) -> Probe:
        at = utcnow()
        try:
            login = center.service_login()
        except DomainError as exc:
            failed = Check(False, None, exc.message)
            return Probe(at, failed, failed, failed)
        ssh, scheduler, storage = await asyncio.gather(
            self._bounded(self._ssh(center, login), "the SSH round trip"),
            self._bounded(self._scheduler(center, login), "the scheduler ping"),
            self._bounded(self._storage(center, login), "the storage roots"),
        )
        return Probe(at, ssh, scheduler, storage)

    async def _bounded(self, check: Awaitable[Check], what: str) -> Check:
        try:
            async with asyncio.timeout(self.config.probe_timeout):
                return await check
        except TimeoutError:
            return Check(
                False, None, f"{what} did not answer within {self.config.probe_timeout:g}s"
            )
        except (AdapterError, DomainError, PathRefused) as exc:
            return Check(False, None, exc.message)
        except Exception as exc:  # a probe must never stop the loop
            log.exception("health probe failed")
            return Check(False, None, f"{type(exc).__name__}: {exc}")

    async def _ssh(self, center: Center, login: str | None) -> Check:
        adapter = center.adapter_for(login)
        if not isinstance(adapter, JobDirAdapter):
            return Check(True)  # a local center: no SSH
        started = time.monotonic()
        result = await adapter.connection.run("true", timeout=self.config.probe_timeout)
        latency = round((time.monotonic() - started) * 1000, 3)
        if result.exit_status != 0:
            return Check(False, latency, f"'true' exited {result.exit_status}")
        return Check(True, latency)

    async def _scheduler(self, center: Center, login: str | None) -> Check:
        await center.adapter_for(login).ping()
        return Check(True)

    async def _storage(self, center: Center, login: str | None) -> Check:
        files = center.files_as(login)
        unreadable = []
        for root in await files.roots():
            try:
                await files.stat(root)
            except (AdapterError, PathRefused) as exc:
                unreadable.append(f"{root}: {exc.message}")
        return Check(not unreadable, None, "; ".join(unreadable) or None)

    # ------------------------------------------------------------ the report

    async def report(self) -> dict[str, Any]:
        """The document GET /v1/health serves."""
        try:
            await self.store.ping()
            store: dict[str, Any] = {"ok": True}
        except Exception as exc:
            store = {"ok": False, "error": str(exc) or type(exc).__name__}
        # The gateway's own non-terminal jobs, as the poller reads them every tick.
        counts = (
            {
                (center, JobState(state)): n
                for (center, state), n in (await self.store.count_by_center_state()).items()
                if not JobState(state).is_terminal
            }
            if store["ok"]
            else {}
        )
        polled = self.poller.last_polled if self.poller is not None else {}
        since = self._window_start()
        centers = []
        for center in self.centers:
            health = self.health.setdefault(center.id, CenterHealth(self.config))
            window = await self.probes.window(center.id, KINDS, since)
            mine = {state: n for (cid, state), n in counts.items() if cid == center.id}
            queued = sum(n for state, n in mine.items() if state in _QUEUED_STATES)
            running = mine.get(JobState.RUNNING, 0)
            active = sum(mine.values())
            last = polled.get(center.id)
            centers.append(
                {
                    **center.public(),
                    "state": health.state,
                    "since": health.since.isoformat() if health.since else None,
                    "reason": health.why,
                    "failing_submissions": _failing(self.poller, center.id),
                    "last_probe": health.last_probe.public() if health.last_probe else None,
                    "ssh_latency_ms": {
                        "p50": window.ssh_percentile(0.5),
                        "p95": window.ssh_percentile(0.95),
                    },
                    "poll_lag_seconds": (
                        round(max(time.time() - last, 0.0), 3) if active and last else None
                    ),
                    "jobs": {"queued": queued, "running": running},
                    "error_rate": (
                        round(window.error_rate, 4) if window.error_rate is not None else None
                    ),
                    "recent_errors": [
                        {"at": e.at.isoformat(), "kind": e.kind, "error": e.error}
                        for e in window.recent_errors
                    ],
                }
            )
        return {
            "status": federation_status([c["state"] for c in centers]),
            "checked_at": utcnow().isoformat(),
            "probe_interval": self.config.probe_interval,
            "store": store,
            "centers": centers,
        }


def _failing(poller: Poller | None, center_id: str) -> dict[str, Any] | None:
    """The center's run of failed submissions, for the report."""
    failing = poller.service.outcomes.failing(center_id) if poller is not None else None
    if failing is None:
        return None
    return {
        "count": failing.count,
        "since": datetime.fromtimestamp(failing.since, UTC).isoformat(),
        "last_error": failing.last_error[:500],
    }


_QUEUED_STATES = frozenset({JobState.SUBMITTING, JobState.QUEUED, JobState.HELD})


def federation_status(states: list[str]) -> str:
    """down if every center is down, degraded if any is not up, else up."""
    if states and all(s == DOWN for s in states):
        return DOWN
    if any(s != UP for s in states):
        return DEGRADED
    return UP
