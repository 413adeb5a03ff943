"""Application service evaluation: each binding of a center runs its application's
canary there (a real batch job, as the center's service login), and the checks of
the definition decide, from the job's output and files, whether the binding is
verified or failed. The outcome, with its evidence, is kept per (center, app,
version); `center: auto` places jobs only where it is verified.

A run holds the lease `appcheck/<center>`: one run per center at a time, whichever
replica starts it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from adapters.base import Adapter, JobRequest, NativeStatus
from adapters.errors import AdapterError
from gateway.apps.models import AppDefinition, OutputCheck
from gateway.apps.render import check_parameters, file_marker, render
from gateway.apps.service import AppService
from gateway.apps.store import AppStore, Verification
from gateway.centers.config import AppBinding
from gateway.centers.configured import Center, CenterRegistry
from gateway.errors import DomainError
from gateway.store.leases import Lease, Leases, LocalLeases, claim
from gateway.units import utcnow

log = logging.getLogger("hpcfed.apps")

POLL_INTERVAL = 1.0  # seconds between status queries while a canary runs
CALL_TIMEOUT = 60.0  # one remote call
TAIL = 2000  # characters of stdout/stderr kept as evidence


def lease_name(center_id: str) -> str:
    return f"appcheck/{center_id}"


@dataclass(frozen=True)
class CanaryRun:
    """A run of every canary of one center."""

    id: str
    center: str
    bindings: list[tuple[str, str]]
    started_at: str

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "center": self.center,
            "bindings": [{"app": a, "version": v} for a, v in self.bindings],
            "started_at": self.started_at,
        }


def _sections(stdout: str, names: list[str]) -> tuple[str, dict[str, str]]:
    """The run's own stdout, and each shown file's text, split at the markers."""
    files: dict[str, str] = {}
    marks = {file_marker(name): name for name in names}
    current: str | None = None
    own: list[str] = []
    parts: dict[str, list[str]] = {}
    for line in stdout.splitlines(keepends=True):
        name = marks.get(line.rstrip("\n"))
        if name is not None:
            current = name
            parts[name] = []
            continue
        (parts[current] if current is not None else own).append(line)
    for name, lines in parts.items():
        files[name] = "".join(lines)
    return "".join(own), files


def judge_checks(checks: list[OutputCheck], texts: dict[str, str]) -> list[dict[str, Any]]:
    """Each check's outcome on the texts by file ("stdout", "stderr", file names)."""
    results = []
    for check in checks:
        text = texts.get(check.file)
        result: dict[str, Any] = {"file": check.file}
        if text is None:
            result.update(passed=False, found=f"{check.file} was not there")
        elif check.regex is not None:
            match = re.search(check.regex, text, re.MULTILINE)
            result.update(
                regex=check.regex,
                passed=match is not None,
                found=match.group(0)[:200] if match else "no line matches",
            )
        else:
            assert check.number is not None
            number = check.number
            match = re.search(number.regex, text, re.MULTILINE)
            result.update(regex=number.regex, expected=number.value, tolerance=number.tolerance)
            if match is None:
                result.update(passed=False, found="no line matches")
            else:
                try:
                    value = float(match.group(1))
                except ValueError:
                    result.update(passed=False, found=f"{match.group(1)!r} is no number")
                else:
                    result.update(value=value, passed=abs(value - number.value) <= number.tolerance)
        results.append(result)
    return results


class CanaryRunner:
    def __init__(
        self,
        apps: AppService,
        store: AppStore,
        centers: CenterRegistry,
        leases: Leases | None = None,
        lease_ttl: float = 15.0,
    ) -> None:
        self.apps = apps
        self.store = store
        self.centers = centers
        self.leases = leases if leases is not None else LocalLeases()
        self.lease_ttl = lease_ttl
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()  # centers whose canaries run in this process

    async def start(self, center_id: str) -> CanaryRun:
        """Start the canaries of every binding of the center; the run's id marks the
        verifications it records. DomainError `canaries_running` while one runs."""
        center = self.centers.get(center_id)
        bindings = center.config.applications.bindings
        if not bindings:
            raise DomainError(
                "not_found", f"center: {center.id} publishes no application", field="center"
            )
        lease = None
        if center.id not in self._running:
            lease = await self.leases.acquire(lease_name(center.id), self.lease_ttl)
        if lease is None:
            raise DomainError(
                "canaries_running", f"the canaries of {center.id} are running already"
            )
        keys = [b.key for b in bindings]
        run = CanaryRun(str(uuid.uuid4()), center.id, keys, utcnow().isoformat())
        try:
            # Outcomes of bindings the center no longer has are not shown again.
            await self.store.forget_verifications(center.id, set(keys))
        except BaseException:
            await self.leases.release(lease)
            raise
        self._running.add(center.id)
        task = asyncio.create_task(self._run(center, run, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _run(self, center: Center, run: CanaryRun, lease: Lease) -> None:
        try:
            watch = _Watch(center.adapter_for(center.service_login()))
            try:
                async with claim(self.leases, lease.name, self.lease_ttl, lease):
                    bindings = center.config.applications.bindings
                    await asyncio.gather(*(self._one(center, b, run.id, watch) for b in bindings))
            finally:
                await watch.close()
        except Exception:
            log.exception("canaries of %s (run %s) stopped", center.id, run.id)
        finally:
            self._running.discard(center.id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _one(self, center: Center, binding: AppBinding, run_id: str, watch: _Watch) -> None:
        evidence: dict[str, Any] = {}
        try:
            state, message = await self._canary(center, binding, evidence, watch)
        except asyncio.CancelledError:
            raise
        except (AdapterError, DomainError) as exc:
            state, message = "failed", exc.message
        except Exception as exc:  # a fault of ours: the binding is not verified by it
            log.exception("canary of %s %s at %s", binding.app, binding.version, center.id)
            state, message = "failed", f"{type(exc).__name__}: {exc}"
        verification = Verification(
            center=center.id,
            app=binding.app,
            version=binding.version,
            state=state,  # type: ignore[arg-type]
            checked_at=utcnow(),
            evaluation_id=run_id,
            message=" ".join(message.split())[:1000],
            evidence=evidence,
        )
        await self.store.record_verification(verification)
        log.info(
            "canary of %s %s at %s: %s: %s",
            binding.app,
            binding.version,
            center.id,
            state,
            verification.message,
        )

    async def _canary(
        self, center: Center, binding: AppBinding, evidence: dict[str, Any], watch: _Watch
    ) -> tuple[str, str]:
        try:
            definition = await self.apps.definition(binding.app)
        except DomainError:
            return "failed", f"{binding.app} is not in the catalog"
        if binding.version not in definition.versions:
            return "failed", f"{binding.app} has no version {binding.version} in the catalog"
        canary = definition.canary
        values = check_parameters(definition, canary.parameters)
        shown = sorted({c.file for c in canary.checks} - {"stdout", "stderr"})
        rendered = render(definition, binding.version, center.config, binding, values, shown)
        request = _request(definition, binding, rendered.script, canary.timeout)
        adapter = watch.adapter
        evidence["script"] = rendered.script
        native_id = await asyncio.wait_for(adapter.submit(request), CALL_TIMEOUT)
        evidence["job"] = {"gateway_id": request.gateway_id, "native_id": native_id}
        try:
            status = await watch.ended(native_id, request.gateway_id, canary.timeout)
        except TimeoutError:
            await adapter.cancel(native_id, request.gateway_id)
            return "failed", f"the canary job {native_id} did not end within {canary.timeout:g}s"
        evidence["job"].update(state=status.state.value, exit_code=status.exit_code)
        texts = {}
        for stream in ("stdout", "stderr"):
            chunk = await asyncio.wait_for(
                adapter.read_output(native_id, request.gateway_id, stream), CALL_TIMEOUT
            )
            texts[stream] = chunk.data.decode(errors="replace")
        texts["stdout"], files = _sections(texts["stdout"], shown)
        texts.update(files)
        evidence["stdout"] = texts["stdout"][-TAIL:]
        evidence["stderr"] = texts["stderr"][-TAIL:]
        results = judge_checks(canary.checks, texts)
        evidence["checks"] = results
        if status.exit_code != 0:
            last = texts["stderr"].strip().splitlines()[-1:] or ["(no stderr)"]
            return "failed", (
                f"the canary job {native_id} ended {status.state.value} with exit code "
                f"{status.exit_code}: {last[0][:300]}"
            )
        failed = [r for r in results if not r["passed"]]
        if failed:
            first = failed[0]
            return "failed", (
                f"{len(failed)} of {len(results)} checks failed; {first['file']}: "
                f"{first.get('regex', '')} -> {first.get('value', first.get('found'))}"
            )
        return "verified", f"{len(results)} checks passed (job {native_id})"


class _Watch:
    """The canary jobs of one center waited for together: one status query an
    interval for all of them, as the poller asks for a center's jobs."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self._waiting: dict[str, tuple[str, asyncio.Future[NativeStatus]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def ended(self, native_id: str, gateway_id: str, seconds: float) -> NativeStatus:
        """The job's status once the center shows it ended; TimeoutError after `seconds`."""
        future: asyncio.Future[NativeStatus] = asyncio.get_running_loop().create_future()
        self._waiting[native_id] = (gateway_id, future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            async with asyncio.timeout(seconds):
                return await asyncio.shield(future)
        finally:
            self._waiting.pop(native_id, None)

    async def _poll(self) -> None:
        while self._waiting:
            wanted = {native: gid for native, (gid, _) in self._waiting.items()}
            try:
                statuses = await asyncio.wait_for(self.adapter.status_many(wanted), CALL_TIMEOUT)
            except (AdapterError, TimeoutError) as exc:  # asked again next time
                log.warning("canary status query failed: %s", exc)
                statuses = {}
            for native, status in statuses.items():
                entry = self._waiting.get(native)
                if entry and status.state.is_terminal and not entry[1].done():
                    entry[1].set_result(status)
            await asyncio.sleep(POLL_INTERVAL)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _request(
    definition: AppDefinition, binding: AppBinding, script: str, timeout: float
) -> JobRequest:
    hints = definition.resources
    return JobRequest(
        gateway_id=str(uuid.uuid4()),
        name="hpcfed-canary",
        script=script,
        nodes=1,
        tasks_per_node=hints.tasks_per_node or 1,
        cpus_per_task=hints.cpus_per_task or 1,
        walltime_seconds=max(60, int(timeout)),
        queue=binding.partitions[0] if binding.partitions else None,
    )
