"""Choosing a center for `center: auto`: one decision over the whole federation.

Candidates are the centers where the user has a login, allowed by the spec's
`placement` (regions, exclude), admitted (see gateway/centers/power.py) and
answering their load query, and where the accounting limits that apply to the
user's login and account there (gateway/centers/account_limits.py) let the job start at
all. Each candidate's partitions are matched against
the resources asked for (GPU model and count per node, cores and memory per
node, node count, walltime limit); the centers that can run the job are scored
on estimated wait, cost, carbon and where the job's inputs are, weighted by
the spec's preferences, and the best one wins. The decision, every candidate's
figures and a sentence explaining the choice are kept on the job.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from adapters.base import CenterLoad, PartitionLoad
from adapters.limits import AccountLimits
from gateway.centers.account_limits import LimitsCache, limit_failures
from gateway.centers.configured import Center, CenterRegistry
from gateway.centers.partitions import estimated_wait, not_yet_seen, requirement_failures
from gateway.centers.power import PowerService
from gateway.config_models import PlacementConfig
from gateway.errors import DomainError
from gateway.jobs.models import PREFERENCES, JobSpec
from gateway.jobs.records import CandidateScore, JobRecord, PlacementDecision
from gateway.units import utcnow

#: How long a placement waits for centers' load queries; slower ones count as unreachable
#: this time (their query goes on and fills the cache for the next job).
LOAD_WAIT = 10.0
#: Weights of the preferences, most important first; the criteria a spec does not
#: name follow with the smallest weights, so ties are broken sensibly.
RANK_WEIGHTS = (1.0, 0.3, 0.1, 0.03)
TIE_WEIGHT = 0.001
#: Assumed draw for the carbon estimate: the same for every center, so the ranking
#: depends only on each center's PUE, green share and carbon intensity.
WATTS_PER_CORE = 10.0
WATTS_PER_GPU = 300.0
#: Walltime assumed for costs and carbon when the spec names none.
DEFAULT_HOURS = 1.0
_LABELS = {
    "fastest": "fastest start",
    "cheapest": "lowest cost",
    "greenest": "least CO2e",
    "near_data": "nearest to its inputs",
}


@dataclass
class _Option:
    center: Center
    partition: PartitionLoad
    wait: float
    wait_basis: str
    cost: float
    currency: str
    carbon: float
    inputs_here: int
    score: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)


class Placer:
    def __init__(self, centers: CenterRegistry, power: PowerService, config: PlacementConfig):
        self.centers = centers
        self.power = power
        self.config = config
        self.limits = LimitsCache()

    async def place(
        self,
        owner: str,
        spec: JobSpec,
        active: Iterable[JobRecord] = (),
        refuse: Callable[[Center], list[str] | None] | None = None,
    ) -> PlacementDecision:
        """The decision for a new job of `owner`; a DomainError naming what failed where.
        `refuse` says why a center may not take the job whatever its load (e.g. it does
        not offer the job's application), or None where it may."""
        prefs = spec.placement
        serving = [c for c in self.centers if c.serves(owner)]
        if not serving:
            raise DomainError(
                "no_identity_at_center",
                f"center: user {owner} has no login at any center; ask a center to map them",
                field="center",
            )
        refused: dict[str, list[str]] = {}
        unavailable: set[str] = set()  # refused only for not being usable now
        candidates: list[Center] = []
        for center in serving:
            if prefs and center.id in prefs.exclude:
                refused[center.id] = ["placement.exclude: excluded by the spec"]
            elif center.down is not None:
                since, error = center.down
                refused[center.id] = [f"center: down since {since.isoformat()} ({error})"]
                unavailable.add(center.id)
            elif refuse is not None and (why := refuse(center)):
                refused[center.id] = why
            elif prefs and prefs.regions and center.config.region not in prefs.regions:
                region = center.config.region or "(none)"
                refused[center.id] = [
                    f"placement.regions: its region {region} is not one of "
                    f"{', '.join(prefs.regions)}"
                ]
            else:
                candidates.append(center)
        admissions = await asyncio.gather(*(self.power.admission(c.id) for c in candidates))
        admitted = []
        for center, admission in zip(candidates, admissions, strict=True):
            if admission.admitted:
                admitted.append(center)
            else:
                refused[center.id] = [f"center: not admitted ({admission.reason})"]
                unavailable.add(center.id)
        loads, limits = await asyncio.gather(self._loads(admitted), self._limits(admitted, owner))
        active = list(active)
        options: list[_Option] = []
        for center in admitted:
            load, error = loads[center.id]
            if load is None:
                refused[center.id] = [f"center: unreachable now ({error})"]
                unavailable.add(center.id)
                continue
            # A job its account may never run there would be accepted and pend for ever.
            if problems := limit_failures(center.id, limits.get(center.id), spec):
                refused[center.id] = problems
                continue
            option, why = self._best_partition(
                center, load, spec, not_yet_seen(active, center.id, load)
            )
            if option is None:
                refused[center.id] = why
            else:
                options.append(option)
        order = _order(spec, self.config)
        if not options:
            raise _unsatisfiable(refused, unavailable)
        _score(options, order)
        chosen = self._choose(options, spec)
        return PlacementDecision(
            chosen=chosen.center.id,
            prefer=order,
            explanation=_explain(chosen, options, refused, order, self._by_default(chosen, spec)),
            candidates=[_candidate(o) for o in options]
            + [CandidateScore(center=cid, eligible=False, refused=r) for cid, r in refused.items()],
            decided_at=utcnow(),
        )

    async def _loads(
        self, centers: list[Center]
    ) -> dict[str, tuple[CenterLoad | None, str | None]]:
        async def one(center: Center) -> tuple[CenterLoad | None, str | None]:
            result = await self.power.loads([center.id])
            return result[center.id]

        tasks = {c.id: asyncio.ensure_future(one(c)) for c in centers}
        if tasks:
            await asyncio.wait(tasks.values(), timeout=LOAD_WAIT)
        out: dict[str, tuple[CenterLoad | None, str | None]] = {}
        for cid, task in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                out[cid] = task.result()
            elif task.done():
                out[cid] = (None, str(task.exception() or "cancelled"))
            else:
                out[cid] = (None, f"no answer within {LOAD_WAIT:g}s")
        return out

    async def _limits(self, centers: list[Center], owner: str) -> dict[str, AccountLimits | None]:
        """The accounting limits of `owner`'s login at each center (cached per login);
        None where there are none or they cannot be learned now (the scheduler still
        enforces them)."""

        async def one(center: Center) -> AccountLimits | None:
            login = None if center.is_local else center.config.login_for(owner)
            return None if login is None else await self.limits.get(center, login)

        found = await asyncio.gather(
            *(asyncio.wait_for(one(c), LOAD_WAIT) for c in centers), return_exceptions=True
        )
        return {
            c.id: r if isinstance(r, AccountLimits) else None
            for c, r in zip(centers, found, strict=True)
        }

    def _by_default(self, chosen: _Option, spec: JobSpec) -> bool:
        return spec.placement is None and chosen.center.id == self.centers.default

    def _choose(self, options: list[_Option], spec: JobSpec) -> _Option:
        if spec.placement is None and self.centers.default:
            for option in options:
                if option.center.id == self.centers.default:
                    return option
        ranked = sorted(
            options, key=lambda o: (-o.score, o.center.id != self.centers.default, o.center.id)
        )
        return ranked[0]

    def _best_partition(
        self, center: Center, load: CenterLoad, spec: JobSpec, unseen_cores: int
    ) -> tuple[_Option | None, list[str]]:
        """The center's best partition for the job, or why none fits."""
        partitions = list(load.partitions)
        if spec.queue is not None and not center.is_local:  # a local center has no queues
            partitions = [p for p in partitions if p.name == spec.queue]
            if not partitions:
                names = ", ".join(p.name for p in load.partitions) or "none"
                return None, [f"queue: {center.id} has no partition {spec.queue} (it has {names})"]
        fitting: list[_Option] = []
        misses: list[list[str]] = []
        for partition in partitions:
            problems = requirement_failures(center.id, partition, spec)
            if problems:
                misses.append(problems)
            else:
                fitting.append(self._option(center, partition, spec, unseen_cores))
        if not fitting:
            return None, min(misses, key=len)
        # The default partition when it fits, else the one that would start soonest.
        default = [o for o in fitting if o.partition.default]
        return (default[0] if default else min(fitting, key=lambda o: o.wait)), []

    def _option(
        self, center: Center, partition: PartitionLoad, spec: JobSpec, unseen_cores: int
    ) -> _Option:
        res = spec.resources
        cores = res.nodes * res.tasks_per_node * res.cpus_per_task
        gpus = res.nodes * res.gpus_per_node
        wait, basis = estimated_wait(partition, cores, unseen_cores)
        # Without a walltime every center is rated for the same hour, so like is
        # compared with like (a partition's own limit would differ from center to center).
        hours = res.walltime / 3600 if res.walltime else DEFAULT_HOURS
        price = center.config.price
        energy = center.config.energy
        kwh = (cores * WATTS_PER_CORE + gpus * WATTS_PER_GPU) * hours / 1000
        carbon = kwh * energy.pue * energy.carbon_intensity * (1 - energy.green_share)
        return _Option(
            center=center,
            partition=partition,
            wait=wait,
            wait_basis=basis,
            cost=(cores * price.core_hour + gpus * price.gpu_hour) * hours,
            currency=price.currency,
            carbon=carbon,
            inputs_here=sum(
                1 for i in spec.inputs if i.source is not None and i.source.center == center.id
            ),
        )


def _order(spec: JobSpec, config: PlacementConfig) -> list[str]:
    named = list(spec.placement.prefer) if spec.placement and spec.placement.prefer else []
    if not named:
        named = [config.default_preference]
    return named


def _score(options: list[_Option], order: list[str]) -> None:
    values = {
        "fastest": [-o.wait for o in options],
        "cheapest": [-o.cost for o in options],
        "greenest": [-o.carbon for o in options],
        "near_data": [float(o.inputs_here) for o in options],
    }
    weights = dict(zip(order, RANK_WEIGHTS, strict=False))
    for name in PREFERENCES:
        weights.setdefault(name, TIE_WEIGHT)
    total = sum(weights.values())
    for i, option in enumerate(options):
        for name, column in values.items():
            low, high = min(column), max(column)
            option.parts[name] = 1.0 if high == low else (column[i] - low) / (high - low)
        option.score = round(sum(weights[n] * option.parts[n] for n in values) / total, 4)


def _figures(o: _Option) -> str:
    return (
        f"wait {o.wait:.0f} s ({o.wait_basis}), cost {o.cost:.4g} {o.currency}, "
        f"{o.carbon:.0f} gCO2e, {o.inputs_here} input(s) there"
    )


def _explain(
    chosen: _Option,
    options: list[_Option],
    refused: dict[str, list[str]],
    order: list[str],
    by_default: bool,
) -> str:
    why = (
        "the gateway's default center, and it can take the job"
        if by_default
        else f"best for {', then '.join(_LABELS[n] for n in order)}"
    )
    text = (
        f"{chosen.center.id} (partition {chosen.partition.name}) chosen: {why}; {_figures(chosen)}."
    )
    others = [o for o in options if o is not chosen]
    if others:
        text += (
            " Others: "
            + "; ".join(
                f"{o.center.id}: {_figures(o)}" for o in sorted(others, key=lambda o: -o.score)
            )
            + "."
        )
    if refused:
        text += (
            " Not eligible: "
            + "; ".join(f"{cid}: {', '.join(r)}" for cid, r in sorted(refused.items()))
            + "."
        )
    return text


def _candidate(o: _Option) -> CandidateScore:
    return CandidateScore(
        center=o.center.id,
        eligible=True,
        partition=o.partition.name,
        estimated_wait_seconds=round(o.wait, 1),
        cost=round(o.cost, 4),
        currency=o.currency,
        carbon_g=round(o.carbon, 1),
        inputs_here=o.inputs_here,
        score=o.score,
    )


def _unsatisfiable(refused: dict[str, list[str]], unavailable: set[str]) -> DomainError:
    listing = "; ".join(f"{cid}: {', '.join(r)}" for cid, r in sorted(refused.items()))
    details = {"candidates": [{"center": c, "refused": r} for c, r in sorted(refused.items())]}
    if unavailable:
        return DomainError(
            "no_center_available",
            f"center: no center can take the job now: {listing}",
            field="center",
            **details,
        )
    fields = Counter(r[0].split(":", 1)[0] for r in refused.values() if r)
    name = fields.most_common(1)[0][0] if fields else "center"
    return DomainError(
        "unsatisfiable",
        f"{name}: no center can run this job: {listing}",
        field=name,
        **details,
    )
