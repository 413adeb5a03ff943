"""The computing-power descriptor: its committed schema, peak figures, stale loads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from adapters.base import CenterLoad, CenterTotals, GpuLoad, PartitionLoad
from adapters.errors import CenterUnavailable
from adapters.local.adapter import LocalAdapter
from gateway.centers.config import CenterConfig
from gateway.centers.configured import Center, CenterRegistry
from gateway.centers.descriptor import SCHEMA_FILE, descriptor_schema, schema_errors
from gateway.centers.power import PowerService
from gateway.config_models import AdmissionConfig, ComputingPowerConfig
from gateway.store.sqlite.evaluations import SQLiteEvaluationStore
from gateway.store.sqlite.probes import SQLiteProbeStore

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmLp0A8aOzNGzhjjHD4HoJ2HIlW3cZk3nY4lYZk1B8E"
GPU = PartitionLoad(
    name="gpu",
    default=True,
    available=True,
    nodes_total=2,
    nodes_idle=1,
    nodes_allocated=1,
    nodes_down=0,
    cores_total=16,
    cores_idle=12,
    cores_allocated=4,
    cores_down=0,
    cores_per_node=8,
    memory_per_node_mib=32768,
    max_walltime_seconds=None,
    gpus=(GpuLoad("a100", total=8, allocated=2, per_node=4),),
    jobs_queued=1,
    jobs_running=2,
    estimated_wait_seconds=30.0,
)


class ScriptedLoads(LocalAdapter):
    """A center whose scheduler answers with the given loads, then fails."""

    def __init__(self, answers: list[CenterLoad | Exception]) -> None:
        super().__init__("centerb", Path("/nonexistent"))
        self.answers = answers
        self.asked = 0

    async def load(self) -> CenterLoad:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_committed_descriptor_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.read_text() == descriptor_schema(), "run `make schema` and commit it"


async def service(tmp_path: Path, adapter: ScriptedLoads, **config: Any) -> PowerService:
    cfg = CenterConfig.model_validate(
        {
            "id": "centerb",
            "type": "slurm",
            "region": "south",
            "ssh": {"host": "h", "login": "svc", "host_keys": [KEY]},
            **config,
        }
    )
    registry = CenterRegistry({"centerb": Center(cfg, lambda _login: adapter)})
    probes = SQLiteProbeStore(tmp_path / "db.sqlite")
    await probes.open()
    evaluations = SQLiteEvaluationStore(tmp_path / "db.sqlite")
    await evaluations.open()
    return PowerService(
        registry, probes, evaluations, ComputingPowerConfig(cache_ttl=60), AdmissionConfig()
    )


HARDWARE = {
    "hardware": {
        "cpu": {"clock_ghz": 2.0, "flops_per_cycle": 16},
        "gpus": {"a100": {"peak_tflops": 9.7}},
    },
    "price": {"currency": "CNY", "core_hour": 0.1, "gpu_hour": 8},
    "energy": {"pue": 1.2, "green_share": 0.5, "carbon_intensity": 400},
}


async def test_descriptor_validates_and_computes_peak_from_hardware_figures(
    tmp_path: Path,
) -> None:
    load = CenterLoad((GPU,), time.time(), jobs_queued=1, jobs_running=2)
    power = await service(tmp_path, ScriptedLoads([load]), **HARDWARE)
    doc = await power.descriptor("centerb")
    assert schema_errors(doc) == []
    assert doc["peak"] == {
        "gflops": 16 * 2.0 * 16 + 8 * 9700,
        "cpu_gflops": 512.0,
        "gpu_gflops": 77600.0,
        "complete": True,
    }
    (part,) = doc["partitions"]
    assert part["gpus"] == [{"model": "a100", "count": 8, "per_node": 4, "peak_tflops": 9.7}]
    assert doc["live"]["gpus"] == [{"model": "a100", "total": 8, "allocated": 2, "idle": 6}]
    assert doc["live"]["estimated_wait_seconds"] == 30.0
    assert doc["price"] == {"currency": "CNY", "core_hour": 0.1, "gpu_hour": 8.0}
    assert doc["admission"]["admitted"] is False
    assert "hpcfed evaluate centerb" in doc["admission"]["reason"]
    assert doc["availability"]["probes"] == 1 and doc["availability"]["ratio"] == 1.0


async def test_missing_hardware_figures_make_the_peak_incomplete(tmp_path: Path) -> None:
    power = await service(tmp_path, ScriptedLoads([CenterLoad((GPU,), time.time())]))
    doc = await power.descriptor("centerb")
    assert schema_errors(doc) == []
    assert doc["peak"]["complete"] is False
    assert doc["partitions"][0]["peak_gflops"] is None


async def test_a_center_that_stops_answering_is_served_stale_then_counts_against_availability(
    tmp_path: Path,
) -> None:
    totals = CenterTotals(2, 1, 1, 0, 16, 12, 4, 0, GPU.gpus)
    answers: list[CenterLoad | Exception] = [
        CenterLoad((GPU,), time.time(), totals=totals),
        CenterUnavailable("center centerb: connection refused", center="centerb"),
    ]
    adapter = ScriptedLoads(answers)
    power = await service(tmp_path, adapter)
    assert (await power.descriptor("centerb"))["live"]["status"] == "ok"
    assert (await power.descriptor("centerb"))["live"]["status"] == "ok"
    assert adapter.asked == 1  # the second came from the cache
    doc = await power.descriptor("centerb", max_age=0)
    assert schema_errors(doc) == []
    assert doc["live"]["status"] == "stale"
    assert "connection refused" in doc["live"]["error"]
    assert doc["live"]["cores"]["total"] == 16  # the last answer is kept
    assert doc["availability"]["probes"] == 2 and doc["availability"]["ratio"] == 0.5
    with pytest.raises(CenterUnavailable):
        await power.load("centerb", max_age=60)


def test_a_broken_document_is_refused_with_the_path_named() -> None:
    errors = schema_errors({"descriptor_version": "1.0"})
    assert any(e.startswith("(root): 'center' is a required property") for e in errors)
