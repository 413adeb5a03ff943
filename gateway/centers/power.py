"""Assembling each center's computing-power descriptor, and whether it is admitted.

Static parts come from the center's config (identity, hardware figures,
price, energy, file roots); live parts from one batched scheduler query per
center (`Adapter.load`), cached for `computing_power.cache_ttl` and shared by
concurrent callers; measured figures from the latest access evaluation;
availability from the probe history. A center that does not answer is served
with its last known load marked stale, never as an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.base import CenterLoad, CenterTotals, GpuLoad, PartitionLoad
from adapters.errors import AdapterError, CenterUnavailable
from gateway.centers.configured import Center, CenterRegistry
from gateway.centers.descriptor import (
    Admission,
    Application,
    Availability,
    Bandwidth,
    CenterIdentity,
    ComputingPower,
    Counts,
    Data,
    Energy,
    GpuModel,
    GpuUse,
    Jobs,
    Live,
    Measured,
    Partition,
    PartitionLive,
    Peak,
    PriceDoc,
)
from gateway.centers.evaluation.models import EvaluationRecord
from gateway.centers.evaluation.store import EvaluationStore
from gateway.centers.probes import ProbeStore
from gateway.config_models import AdmissionConfig, ComputingPowerConfig
from gateway.errors import DomainError, adapter_error
from gateway.units import utcnow

#: A center -> its offered applications, as `Application` fields.
Applications = Callable[[Center], Awaitable[list[dict[str, Any]]]]

log = logging.getLogger("hpcfed.power")

#: A load query may take this long at most, whatever the center's command timeout.
LOAD_TIMEOUT = 30.0


@dataclass
class _Cached:
    load: CenterLoad | None = None
    fetched: float = float("-inf")  # monotonic time of the last attempt
    error: str | None = None  # of the last attempt, if it failed
    exc: BaseException | None = None


class PowerService:
    def __init__(
        self,
        centers: CenterRegistry,
        probes: ProbeStore,
        evaluations: EvaluationStore,
        config: ComputingPowerConfig,
        admission: AdmissionConfig,
    ) -> None:
        self.centers = centers
        self.probes = probes
        #: Admission and measured figures come from each center's latest finished one.
        self.evaluations = evaluations
        self.config = config
        self.admission_config = admission
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: A center's offered applications and their canaries, for the descriptor (set by
        #: whoever assembles the services; none without a catalog).
        self.applications: Applications | None = None

    # ------------------------------------------------------------ live load

    async def load(self, center_id: str, *, max_age: float | None = None) -> CenterLoad:
        """The center's load, at most `max_age` seconds old (default: the cache TTL).
        Raises the adapter's error when the center cannot be asked now."""
        center = self.centers.get(center_id)
        cached = await self._refresh(center, max_age)
        if cached.exc is not None:
            raise cached.exc
        assert cached.load is not None
        return cached.load

    async def _refresh(self, center: Center, max_age: float | None) -> _Cached:
        ttl = self.config.cache_ttl if max_age is None else max_age
        cached = self._cache.setdefault(center.id, _Cached())
        if time.monotonic() - cached.fetched < ttl:
            return cached
        lock = self._locks.setdefault(center.id, asyncio.Lock())
        async with lock:
            cached = self._cache[center.id]
            if time.monotonic() - cached.fetched < ttl:
                return cached  # another caller refreshed it meanwhile
            started = time.monotonic()
            try:
                adapter = center.adapter_for(center.service_login())
                async with asyncio.timeout(LOAD_TIMEOUT):
                    load = await adapter.load()
            except (AdapterError, TimeoutError, DomainError) as exc:
                message = _message(center, exc)
                if isinstance(exc, TimeoutError):
                    exc = CenterUnavailable(message, center=center.id)
                log.warning("center %s: load query failed: %s", center.id, message)
                self._cache[center.id] = _Cached(cached.load, time.monotonic(), message, exc)
                await self.probes.record(center.id, "load", False, None, message)
                return self._cache[center.id]
            latency = (time.monotonic() - started) * 1000
            self._cache[center.id] = _Cached(load, time.monotonic())
            await self.probes.record(center.id, "load", True, latency, None)
            return self._cache[center.id]

    async def loads(
        self, center_ids: Iterable[str], *, max_age: float | None = None
    ) -> dict[str, tuple[CenterLoad | None, str | None]]:
        """Center -> (load or None, error or None) for several centers at once."""
        ids = list(center_ids)
        results = await asyncio.gather(
            *(self._refresh(self.centers.get(cid), max_age) for cid in ids)
        )
        return {
            cid: (r.load if r.error is None else None, r.error)
            for cid, r in zip(ids, results, strict=True)
        }

    # ------------------------------------------------------------ admission

    async def latest_evaluation(self, center_id: str) -> EvaluationRecord | None:
        return await self.evaluations.latest_finished(center_id)

    async def admission(self, center_id: str) -> Admission:
        center = self.centers.get(center_id)
        return admission_of(center, await self.latest_evaluation(center_id), self.admission_config)

    # ------------------------------------------------------------ the descriptor

    async def descriptor(self, center_id: str, *, max_age: float | None = None) -> dict[str, Any]:
        center = self.centers.get(center_id)
        cached = await self._refresh(center, max_age)
        evaluation = await self.latest_evaluation(center_id)
        since = utcnow() - timedelta(seconds=self.config.availability_window)
        stats = await self.probes.stats(center.id, since)
        cfg = center.config
        load = cached.load
        partitions = [_partition(center, p) for p in load.partitions] if load else []
        figures = evaluation.figures if evaluation and evaluation.state == "DONE" else None
        doc = ComputingPower(
            generated_at=utcnow(),
            center=CenterIdentity(
                id=cfg.id,
                name=cfg.name or cfg.id,
                type=cfg.center_type.descriptor_kind,
                region=cfg.region,
            ),
            partitions=partitions,
            peak=_peak(center, partitions),
            measured=(
                Measured(
                    kernel=figures.kernel or "unknown",
                    hpl_gflops=figures.hpl_gflops,
                    cores=figures.hpl_cores,
                    problem_size=figures.hpl_n,
                    peak_gflops=figures.peak_gflops,
                    efficiency=figures.efficiency,
                    gflops_per_core=figures.gflops_per_core,
                    evaluation_id=evaluation.id,
                    measured_at=evaluation.finished_at or evaluation.created_at,
                )
                if evaluation and figures and figures.gflops_per_core is not None
                else None
            ),
            live=_live(cached),
            price=PriceDoc(**cfg.price.model_dump()),
            energy=Energy(
                pue=cfg.energy.pue,
                green_share=cfg.energy.green_share,
                carbon_intensity_g_per_kwh=cfg.energy.carbon_intensity,
            ),
            availability=Availability(
                window_seconds=self.config.availability_window,
                probes=stats.probes,
                successes=stats.successes,
                ratio=stats.ratio,
                last_probe_at=stats.last_probe_at,
                last_success_at=stats.last_success_at,
            ),
            data=Data(
                roots=list(cfg.files.roots),
                bandwidth=(
                    Bandwidth(
                        upload_mb_s=figures.upload_mb_s,
                        download_mb_s=figures.download_mb_s,
                        measured_at=evaluation.finished_at or evaluation.created_at,
                        evaluation_id=evaluation.id,
                    )
                    if evaluation
                    and figures
                    and figures.upload_mb_s is not None
                    and figures.download_mb_s is not None
                    else None
                ),
            ),
            admission=admission_of(center, evaluation, self.admission_config),
            applications=(
                [Application(**a) for a in await self.applications(center)]
                if self.applications is not None
                else []
            ),
        )
        return doc.model_dump(mode="json")


def _message(center: Center, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"center {center.id}: the load query did not answer within {LOAD_TIMEOUT:g}s"
    if isinstance(exc, DomainError):
        return exc.message
    assert isinstance(exc, AdapterError)
    return adapter_error(exc).message


def admission_of(
    center: Center, evaluation: EvaluationRecord | None, config: AdmissionConfig
) -> Admission:
    """Whether placement may send jobs to the center, and why."""
    facts: dict[str, Any] = {}
    if evaluation is not None:
        facts = {
            "evaluation_id": evaluation.id,
            "score": evaluation.score,
            "evaluated_at": evaluation.finished_at or evaluation.created_at,
        }
    if center.is_local:
        return Admission(admitted=True, reason="a local center needs no evaluation", **facts)
    if not config.required:
        return Admission(admitted=True, reason="this gateway does not require admission", **facts)
    if evaluation is None:
        return Admission(
            admitted=False,
            reason=f"not evaluated yet: run 'hpcfed evaluate {center.id}'",
        )
    if evaluation.state == "ERROR":
        return Admission(
            admitted=False,
            reason=f"the latest evaluation ({evaluation.id}) could not run: {evaluation.error}",
            **facts,
        )
    if evaluation.verdict != "admit":
        why = "; ".join(evaluation.reasons) or "refused"
        return Admission(
            admitted=False, reason=f"refused by evaluation {evaluation.id}: {why}", **facts
        )
    return Admission(admitted=True, reason=f"admitted by evaluation {evaluation.id}", **facts)


# ------------------------------------------------------------ pieces of the document


def _partition(center: Center, p: PartitionLoad) -> Partition:
    hardware = center.config.hardware
    cpu = hardware.cpu_of(p.name)
    gpus = [
        GpuModel(
            model=g.model,
            count=g.total,
            per_node=g.per_node,
            peak_tflops=hardware.gpus[g.model].peak_tflops if g.model in hardware.gpus else None,
        )
        for g in p.gpus
    ]
    peak: float | None = None
    if cpu is not None and all(g.peak_tflops is not None for g in gpus):
        peak = p.cores_total * cpu.clock_ghz * cpu.flops_per_cycle + sum(
            g.count * (g.peak_tflops or 0.0) * 1000 for g in gpus
        )
    return Partition(
        name=p.name,
        default=p.default,
        available=p.available,
        nodes=p.nodes_total,
        cores=p.cores_total,
        cores_per_node=p.cores_per_node,
        memory_per_node_mib=p.memory_per_node_mib,
        max_walltime_seconds=p.max_walltime_seconds,
        max_nodes_per_job=p.max_nodes_per_job,
        gpus=gpus,
        peak_gflops=round(peak, 3) if peak is not None else None,
    )


def _peak(center: Center, partitions: list[Partition]) -> Peak:
    """The center's peak, each node once: partitions sharing nodes count them once,
    by keeping the largest figure among partitions of equal size (the usual case of
    several queues over one pool), else summing."""
    hardware = center.config.hardware
    cpu = gpu = 0.0
    complete = bool(partitions)
    seen: set[tuple[int, int, tuple[tuple[str, int], ...]]] = set()
    for p in partitions:
        shape = (p.nodes, p.cores, tuple((g.model, g.count) for g in p.gpus))
        if shape in seen:
            continue  # the same pool of nodes under another name
        seen.add(shape)
        figures = hardware.cpu_of(p.name)
        if figures is None:
            complete = False
        else:
            cpu += p.cores * figures.clock_ghz * figures.flops_per_cycle
        for g in p.gpus:
            if g.peak_tflops is None:
                complete = False
            else:
                gpu += g.count * g.peak_tflops * 1000
    return Peak(
        gflops=round(cpu + gpu, 3),
        cpu_gflops=round(cpu, 3),
        gpu_gflops=round(gpu, 3),
        complete=complete,
    )


def _gpu_use(gpus: Iterable[GpuLoad]) -> list[GpuUse]:
    merged: dict[str, list[int]] = {}
    for g in gpus:
        total = merged.setdefault(g.model, [0, 0])
        total[0] += g.total
        total[1] += g.allocated
    return [
        GpuUse(model=m, total=t, allocated=a, idle=max(t - a, 0))
        for m, (t, a) in sorted(merged.items())
    ]


def _totals(load: CenterLoad) -> CenterTotals:
    if load.totals is not None:
        return load.totals
    parts = load.partitions
    return CenterTotals(
        nodes_total=sum(p.nodes_total for p in parts),
        nodes_idle=sum(p.nodes_idle for p in parts),
        nodes_allocated=sum(p.nodes_allocated for p in parts),
        nodes_down=sum(p.nodes_down for p in parts),
        cores_total=sum(p.cores_total for p in parts),
        cores_idle=sum(p.cores_idle for p in parts),
        cores_allocated=sum(p.cores_allocated for p in parts),
        cores_down=sum(p.cores_down for p in parts),
        gpus=tuple(g for p in parts for g in p.gpus),
    )


def _nodes(of: CenterTotals | PartitionLoad) -> Counts:
    return Counts(
        total=of.nodes_total, idle=of.nodes_idle, allocated=of.nodes_allocated, down=of.nodes_down
    )


def _cores(of: CenterTotals | PartitionLoad) -> Counts:
    return Counts(
        total=of.cores_total, idle=of.cores_idle, allocated=of.cores_allocated, down=of.cores_down
    )


def _live(cached: _Cached) -> Live:
    load = cached.load
    if load is None:
        return Live(status="unavailable", error=cached.error or "not asked yet")
    queried = datetime.fromtimestamp(load.queried_at, UTC)
    totals = _totals(load)
    default = next((p for p in load.partitions if p.default), None)
    return Live(
        status="ok" if cached.error is None else "stale",
        error=cached.error,
        queried_at=queried,
        age_seconds=round(max(time.time() - load.queried_at, 0.0), 3),
        nodes=_nodes(totals),
        cores=_cores(totals),
        gpus=_gpu_use(totals.gpus),
        jobs=Jobs(queued=load.jobs_queued, running=load.jobs_running),
        estimated_wait_seconds=default.estimated_wait_seconds if default else None,
        partitions=[
            PartitionLive(
                name=p.name,
                nodes=_nodes(p),
                cores=_cores(p),
                gpus=_gpu_use(p.gpus),
                jobs=Jobs(queued=p.jobs_queued, running=p.jobs_running),
                estimated_wait_seconds=p.estimated_wait_seconds,
            )
            for p in load.partitions
        ],
    )
