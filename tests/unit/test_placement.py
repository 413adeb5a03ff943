"""Placement decisions over given loads: who can run a job, who is best, and why.

The loads are made here (the real scheduler queries are tested on the testbed);
what is under test is the decision: requirement matching, scores, explanation
and the refusal that names what failed where.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from adapters.base import CenterLoad, GpuLoad, PartitionLoad
from gateway.centers.config import CenterConfig
from gateway.centers.configured import Center, CenterRegistry
from gateway.centers.descriptor import Admission
from gateway.centers.partitions import requirement_failures
from gateway.centers.placement import Placer
from gateway.config_models import PlacementConfig
from gateway.errors import DomainError
from gateway.http.errors import status_of
from gateway.jobs.models import JobSpec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmLp0A8aOzNGzhjjHD4HoJ2HIlW3cZk3nY4lYZk1B8E"


def partition(name: str = "batch", **fields: Any) -> PartitionLoad:
    base: dict[str, Any] = dict(
        name=name,
        default=True,
        available=True,
        nodes_total=1,
        nodes_idle=1,
        nodes_allocated=0,
        nodes_down=0,
        cores_total=8,
        cores_idle=8,
        cores_allocated=0,
        cores_down=0,
        cores_per_node=8,
        memory_per_node_mib=16384,
        max_walltime_seconds=86400,
    )
    base.update(fields)
    return PartitionLoad(**base)


def center(cid: str, region: str = "north", **config: Any) -> Center:
    cfg = CenterConfig.model_validate(
        {
            "id": cid,
            "type": "slurm",
            "region": region,
            "ssh": {"host": "h", "login": "svc", "host_keys": [KEY]},
            "users": {"alice": {"login": "alice"}},
            **config,
        }
    )
    return Center(cfg, lambda _login: None)  # type: ignore[arg-type,return-value]


class Loads:
    """Stands in for the power service: fixed loads and admissions."""

    def __init__(
        self, loads: dict[str, list[PartitionLoad] | None], refused: frozenset[str] = frozenset()
    ):
        self._loads = loads
        self._refused = refused

    async def admission(self, cid: str) -> Admission:
        if cid in self._refused:
            return Admission(admitted=False, reason="not evaluated yet")
        return Admission(admitted=True, reason="admitted by evaluation e1")

    async def loads(self, ids: list[str], **_: Any) -> dict[str, tuple[Any, Any]]:
        out = {}
        for cid in ids:
            parts = self._loads[cid]
            load = CenterLoad(tuple(parts), time.time()) if parts is not None else None
            out[cid] = (load, None if parts is not None else "connection refused")
        return out


def placer(centers: list[Center], loads: Loads, default: str | None = None) -> Placer:
    registry = CenterRegistry({c.id: c for c in centers}, default=default)
    return Placer(registry, loads, PlacementConfig())  # type: ignore[arg-type]


def spec(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"command": "true", **fields})


async def test_a_loaded_center_loses_to_an_idle_one_and_the_explanation_says_why() -> None:
    busy = partition(cores_idle=0, cores_allocated=8, jobs_queued=12, estimated_wait_seconds=900)
    p = placer(
        [center("centera"), center("centerc")],
        Loads({"centera": [busy], "centerc": [partition()]}),
    )
    decision = await p.place("alice", spec())
    assert decision.chosen == "centerc"
    assert decision.prefer == ["fastest"]
    assert "fastest start" in decision.explanation
    assert "centera: wait 900 s" in decision.explanation
    assert "12 queued" in decision.explanation
    scores = {c.center: c for c in decision.candidates}
    assert scores["centerc"].score > scores["centera"].score
    assert scores["centera"].estimated_wait_seconds == 900


async def test_a_gpu_job_goes_to_the_only_center_with_enough_gpus_of_its_model() -> None:
    gpu = partition("gpu", gpus=(GpuLoad("a100", total=4, allocated=0, per_node=4),))
    p = placer(
        [center("centera"), center("centerb"), center("centerc")],
        Loads({"centera": [partition()], "centerb": [gpu], "centerc": [partition()]}),
    )
    decision = await p.place("alice", spec(resources={"gpus_per_node": 2, "gpu_type": "a100"}))
    assert decision.chosen == "centerb"
    refused = {c.center: c.refused for c in decision.candidates if not c.eligible}
    assert refused["centera"] == ["resources.gpus_per_node: centera partition batch has no GPUs"]


async def test_an_unsatisfiable_spec_is_refused_naming_the_requirement_at_each_center() -> None:
    gpu = partition("gpu", gpus=(GpuLoad("a100", total=4, allocated=0, per_node=4),))
    p = placer(
        [center("centera"), center("centerb")], Loads({"centera": [partition()], "centerb": [gpu]})
    )
    with pytest.raises(DomainError) as err:
        await p.place("alice", spec(resources={"gpus_per_node": 8}))
    assert status_of(err.value) == 422
    assert err.value.code == "unsatisfiable"
    assert err.value.field == "resources.gpus_per_node"
    assert "centera partition batch has no GPUs" in err.value.message
    assert "centerb partition gpu has at most 4 per node, asked 8" in err.value.message


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"nodes": 2}, "resources.nodes"),
        ({"cpus_per_task": 16}, "resources.cpus_per_task"),
        ({"memory_per_node": "32GiB"}, "resources.memory_per_node"),
        ({"walltime": "2-00:00:00"}, "resources.walltime"),
        ({"gpus_per_node": 1, "gpu_type": "h100"}, "resources.gpus_per_node"),
    ],
)
def test_each_resource_beyond_the_partition_is_named(resources: dict[str, Any], field: str) -> None:
    problems = requirement_failures("c", partition(), spec(resources=resources))
    assert [p.split(":", 1)[0] for p in problems] == [field]


def test_a_gpu_model_the_partition_lacks_is_named_as_gpu_type() -> None:
    gpu = partition(gpus=(GpuLoad("a100", total=4, allocated=0, per_node=4),))
    problems = requirement_failures(
        "c", gpu, spec(resources={"gpus_per_node": 1, "gpu_type": "h100"})
    )
    assert problems == ["resources.gpu_type: c partition batch has no h100 GPUs (a100)"]


async def test_greenest_follows_the_configured_energy_figures() -> None:
    dirty = {"energy": {"pue": 1.6, "green_share": 0.1, "carbon_intensity": 800}}
    clean = {"energy": {"pue": 1.1, "green_share": 0.9, "carbon_intensity": 300}}
    loads = Loads({"centera": [partition()], "centerc": [partition()]})
    wanted = spec(placement={"prefer": "greenest"})
    first = await placer([center("centera", **clean), center("centerc", **dirty)], loads).place(
        "alice", wanted
    )
    assert first.chosen == "centera"
    swapped = await placer([center("centera", **dirty), center("centerc", **clean)], loads).place(
        "alice", wanted
    )
    assert swapped.chosen == "centerc"
    assert "least CO2e" in swapped.explanation


async def test_cheapest_follows_the_price_and_regions_limit_the_choice() -> None:
    cheap = {"price": {"core_hour": 0.01}}
    dear = {"price": {"core_hour": 0.5}}
    loads = Loads({"centera": [partition()], "centerc": [partition()]})
    centers = [center("centera", "north", **dear), center("centerc", "east", **cheap)]
    assert (
        await placer(centers, loads).place("alice", spec(placement={"prefer": "cheapest"}))
    ).chosen == "centerc"
    limited = await placer(centers, loads).place(
        "alice", spec(placement={"prefer": "cheapest", "regions": ["north"]})
    )
    assert limited.chosen == "centera"
    refused = {c.center: c.refused for c in limited.candidates if not c.eligible}
    assert refused["centerc"][0].startswith("placement.regions: its region east")


async def test_near_data_prefers_the_center_holding_the_inputs() -> None:
    loads = Loads({"centera": [partition()], "centerc": [partition()]})
    wanted = spec(
        placement={"prefer": ["near_data"]},
        inputs=[{"destination": "in.dat", "source": {"center": "centerc", "path": "data/in.dat"}}],
    )
    decision = await placer([center("centera"), center("centerc")], loads).place("alice", wanted)
    assert decision.chosen == "centerc"


async def test_centers_not_admitted_or_unreachable_get_no_job_and_say_so() -> None:
    loads = Loads(
        {"centera": [partition()], "centerb": None, "centerc": [partition()]}, {"centera"}
    )
    decision = await placer([center("centera"), center("centerb"), center("centerc")], loads).place(
        "alice", spec()
    )
    assert decision.chosen == "centerc"
    refused = {c.center: c.refused for c in decision.candidates if not c.eligible}
    assert refused["centera"] == ["center: not admitted (not evaluated yet)"]
    assert refused["centerb"] == ["center: unreachable now (connection refused)"]
    only = placer([center("centera")], loads)
    with pytest.raises(DomainError) as err:
        await only.place("alice", spec())
    assert (status_of(err.value), err.value.code) == (503, "no_center_available")


async def test_the_default_center_takes_jobs_without_preferences_when_it_can() -> None:
    busy = partition(cores_idle=0, jobs_queued=3, estimated_wait_seconds=600)
    loads = Loads({"centera": [busy], "centerc": [partition()]})
    p = placer([center("centera"), center("centerc")], loads, default="centera")
    assert (await p.place("alice", spec())).chosen == "centera"
    assert (await p.place("alice", spec(placement={"prefer": "fastest"}))).chosen == "centerc"


def test_a_partition_of_unequal_nodes_does_not_take_more_cores_or_gpus_than_it_has() -> None:
    # One 64-core node with 4 GPUs and one 2-core node without: per node, the largest fits.
    mixed = partition(
        nodes_total=2,
        cores_total=66,
        cores_per_node=64,
        gpus=(GpuLoad("a100", total=4, allocated=0, per_node=4),),
    )
    cores = requirement_failures("c", mixed, spec(resources={"nodes": 2, "cpus_per_task": 64}))
    assert cores == [
        "resources.nodes: c partition batch has 66 cores in all, asked 128 (2 nodes x 64 cores)"
    ]
    gpus = requirement_failures("c", mixed, spec(resources={"nodes": 2, "gpus_per_node": 4}))
    assert gpus == [
        "resources.nodes: c partition batch has 4 such GPUs in all, asked 8 (2 nodes x 4)"
    ]
    assert requirement_failures("c", mixed, spec(resources={"nodes": 2, "cpus_per_task": 2})) == []


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"cpus_per_task": 65}, "resources.cpus_per_task"),  # 64 cores per node at most
        ({"walltime": "100:00:00"}, "resources.walltime"),  # workq 72 h, gpuq 24 h
        ({"nodes": 3}, "resources.nodes"),  # workq: 2 a job; gpuq: 2 nodes
        ({"gpus_per_node": 5}, "resources.gpus_per_node"),  # gpuq: 4 a node
    ],
)
async def test_auto_never_places_a_job_where_the_pbs_load_shows_it_cannot_fit(
    resources: dict[str, Any], field: str
) -> None:
    """The queues of a PBS Pro server as the adapter's parser reads them
    (tests/fixtures/pbs/load-pbspro_server.txt, in OpenPBS's JSON; `maintq` is disabled)."""
    from pathlib import Path

    from adapters.pbs.load import parse_load

    text = (
        Path(__file__).parent.parent / "fixtures" / "pbs" / "load-pbspro_server.txt"
    ).read_text()
    queues = list(parse_load(text, time.time(), "pbspro", None).partitions)
    p = placer([center("pbs1")], Loads({"pbs1": queues}))
    assert (await p.place("alice", spec(resources={"cpus_per_task": 8}))).chosen == "pbs1"
    with pytest.raises(DomainError) as err:
        await p.place("alice", spec(resources=resources))
    assert (status_of(err.value), err.value.field) == (422, field)
    assert "pbs1 partition" in err.value.message
