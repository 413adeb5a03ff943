"""Published applications on the real testbed: Debian's LAMMPS behind different Lmod
modules at centera and centerc, GROMACS at centerb only, HPCC everywhere, a LAMMPS
binding at centerb whose module points at a missing binary; canaries run as real batch
jobs, and jobs of an application go only where a verified binding offers it."""

from __future__ import annotations

import asyncio
import dataclasses
import pwd
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.centers.config import AppBinding, CenterConfig
from gateway.client.core import ClientError, HpcfedClient
from gateway.config import load_app_files, load_config
from gateway.config_models import AdmissionConfig
from tests.apps.corpus import CORPUS, MARKER
from tests.conftest import REPO, Gateway, config_with, launch_gateway, stop_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CENTERS = ("centera", "centerb", "centerc")
#: The test application's versions: 1.0 at centera and centerc, 2.0 at centerc only.
ECHO = {"centera": ("1.0",), "centerc": ("1.0", "2.0")}


def _with_echo(center: CenterConfig) -> CenterConfig:
    extra = [AppBinding(app="echo-args", version=v) for v in ECHO.get(center.id, ())]
    apps = center.applications.model_copy(
        update={"bindings": [*center.applications.bindings, *extra]}
    )
    return center.model_copy(update={"applications": apps})


@dataclass
class Catalog:
    gateway: Gateway
    canaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    before: ClientError | None = None

    def client(self, user: str = "alice") -> HpcfedClient:
        return self.gateway.client(user)

    def outcome(self, center: str, app: str) -> dict[str, Any]:
        return next(o for o in self.canaries[center] if o["app"] == app)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def catalog(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Catalog]:
    base = load_config(testbed.gateway_config)
    apps = load_app_files(REPO, ["configs/apps/*.yaml", "tests/apps/*.yaml"])
    config = config_with(
        dataclasses.replace(base, apps=apps),
        tmp_path_factory.mktemp("apps"),
        centers={c: _with_echo(base.centers[c]) for c in CENTERS},
        poll_interval=0.5,
        admission=AdmissionConfig(required=False),
    )
    gateway = await launch_gateway(config, {"alice": ("researcher",), "root": ("admin",)})
    catalog = Catalog(gateway)
    try:
        async with gateway.client("alice") as client:
            try:  # nothing is verified yet: `auto` has nowhere to go
                await client.submit({"app": {"name": "lammps"}})
            except ClientError as exc:
                catalog.before = exc
        async with gateway.client("root") as admin:
            runs = {c: await admin.run_canaries(c) for c in CENTERS}
            for center, run in runs.items():
                catalog.canaries[center] = await admin.wait_canaries(
                    center, run, timeout=420, interval=1
                )
        yield catalog
    finally:
        await stop_gateway(gateway)


async def test_before_any_canary_auto_places_no_application(catalog: Catalog) -> None:
    error = catalog.before
    assert error is not None and error.status == 422
    assert (error.code, error.body["field"]) == ("unsatisfiable", "app")
    assert "not verified yet" in error.message


async def test_canaries_verify_the_working_bindings_and_fail_the_broken_one(
    catalog: Catalog,
) -> None:
    for center in CENTERS:
        assert catalog.outcome(center, "hpcc")["state"] == "verified", center
    assert catalog.outcome("centera", "lammps")["state"] == "verified"
    assert catalog.outcome("centerc", "lammps")["state"] == "verified"
    assert catalog.outcome("centerb", "gromacs")["state"] == "verified"
    broken = catalog.outcome("centerb", "lammps")
    assert broken["state"] == "failed"
    assert "exit code 127" in broken["message"] and "lmp_mpi" in broken["message"]


async def test_the_catalog_shows_each_offer_with_its_state_and_evidence(catalog: Catalog) -> None:
    async with catalog.client() as client:
        lammps = await client.app("lammps")
        assert lammps["parameters"]["steps"]["max"] == 100000
        (version,) = lammps["versions"]
        offers = {o["center"]: o for o in version["centers"]}
        assert {c: o["state"] for c, o in offers.items()} == {
            "centera": "verified",
            "centerb": "failed",
            "centerc": "verified",
        }
        assert offers["centerc"]["modules"] == ["LAMMPS/2022.01"]
        assert offers["centera"]["checked_at"] and offers["centerb"]["checked_at"]
        # The failed canary's evidence: its script, its job, what stderr said.
        evidence = offers["centerb"]["evidence"]
        assert "module load lammps/7Jan2022" in evidence["script"]
        assert evidence["job"]["exit_code"] == 127 and evidence["job"]["native_id"]
        assert "lmp_mpi" in evidence["stderr"]
        assert [c["passed"] for c in offers["centera"]["evidence"]["checks"]] == [True] * 3
        at_b = await client.apps("centerb")
        names = {a["name"]: a for a in at_b}
        assert [o["center"] for v in names["gromacs"]["versions"] for o in v["centers"]] == [
            "centerb"
        ]
        assert not [o for v in names["echo-args"]["versions"] for o in v["centers"]]
        # Another center's descriptor lists its bindings and their canaries.
        doc = await client.computing_power("centerb")
        states = {(a["name"], a["version"]): a["state"] for a in doc["applications"]}
        assert states[("lammps", "7Jan2022")] == "failed"
        assert states[("gromacs", "2022.5")] == "verified"


async def _thermo(client: HpcfedClient, job: dict[str, Any], steps: int) -> str:
    done = await client.wait(job["id"], timeout=300, interval=0.5)
    assert done["state"] == "COMPLETED", done
    out = (await client.output(job["id"])).decode()
    assert "Step Temp E_pair E_mol TotEng Press" in out
    # The melt's first thermo line is fixed by its lattice, seed and temperature.
    assert "       0            3   -6.7733681            0   -2.2744931   -3.7033504" in out
    assert f"for {steps} steps with 4000 atoms" in out
    return out


async def test_a_lammps_melt_with_auto_goes_to_a_verified_binding_and_completes(
    catalog: Catalog, tmp_path: Path
) -> None:
    async with catalog.client() as client:
        job = await client.submit(
            {
                "name": "melt",
                "app": {"name": "lammps", "parameters": {"steps": 300}},
                "outputs": [{"source": "log.lammps"}],
            }
        )
        assert job["center"] in ("centera", "centerc")
        placement = job["placement"]
        assert "lammps 7Jan2022 offered here, canary verified" in placement["explanation"]
        refused = {c["center"]: c["refused"] for c in placement["candidates"] if not c["eligible"]}
        assert "failed its canary" in " ".join(refused["centerb"])
        app = job["application"]
        assert (app["name"], app["version"], app["parameters"]["steps"]) == (
            "lammps",
            "7Jan2022",
            300,
        )
        assert app["outputs"] == ["log.lammps"]
        await _thermo(client, job, 300)
        # The log LAMMPS wrote, collected at the end, holds the same thermo output.
        done = await client.get(job["id"])
        (log,) = done["staging"]["outputs"]
        assert log["state"] == "done", log
        local = tmp_path / "log.lammps"
        await client.download(done["center"], log["path"], local, verify=True)
        text = local.read_text()
        assert "Step Temp E_pair E_mol TotEng Press" in text
        assert "       0            3   -6.7733681            0   -2.2744931   -3.7033504" in text
        assert "Loop time of" in text and "for 300 steps with 4000 atoms" in text


@pytest.mark.parametrize(
    ("center", "module", "program"),
    [("centera", "lammps/7Jan2022", "lmp"), ("centerc", "LAMMPS/2022.01", "lmp_serial")],
)
async def test_pinned_lammps_runs_at_each_center_under_its_own_module(
    catalog: Catalog, center: str, module: str, program: str
) -> None:
    async with catalog.client() as client:
        job = await client.submit(
            {"center": center, "app": {"name": "lammps", "parameters": {"steps": 200}}}
        )
        script = job["application"]["script"]
        assert f"module load {module}\n" in script
        assert f"exec -- {program} -in in.melt" in script
        await _thermo(client, job, 200)


async def test_an_app_only_centerb_offers_runs_at_centerb(catalog: Catalog) -> None:
    async with catalog.client() as client:
        job = await client.submit({"app": {"name": "gromacs", "parameters": {"nsteps": 100}}})
        assert job["center"] == "centerb"
        done = await client.wait(job["id"], timeout=300, interval=0.5)
        assert done["state"] == "COMPLETED", done
        err = (await client.output(job["id"], "stderr")).decode()
        assert "Performance:" in err or "Finished mdrun" in err, err[-2000:]


async def test_unknown_apps_versions_and_parameters_are_422_naming_the_field(
    catalog: Catalog,
) -> None:
    async with catalog.client() as client:
        cases = [
            ({"app": {"name": "nosuchapp"}}, "app.name", "unknown_app"),
            ({"app": {"name": "lammps", "version": "1999"}}, "app.version", "invalid_request"),
            (
                {"app": {"name": "lammps", "parameters": {"steps": 200000}}},
                "app.parameters.steps",
                "invalid_request",
            ),
            (
                {"center": "centerb", "app": {"name": "echo-args"}},
                "center",
                "unsatisfiable",
            ),
            ({"center": "centerb", "app": {"name": "lammps"}}, "center", "unsatisfiable"),
        ]
        for spec, field_name, code in cases:
            with pytest.raises(ClientError) as caught:
                await client.submit(spec)
            error = caught.value
            assert (error.status, error.code, error.body.get("field")) == (422, code, field_name)
            assert error.message.startswith(f"{field_name}: "), error.message
            if field_name == "app.parameters.steps":
                assert error.message == "app.parameters.steps: must be <= 100000"


async def test_a_version_only_one_center_offers_goes_there(catalog: Catalog) -> None:
    async with catalog.client() as client:
        newest = await client.submit({"app": {"name": "echo-args", "version": "2.0"}})
        assert newest["center"] == "centerc"
        older = await client.submit(
            {"app": {"name": "echo-args", "version": "1.0"}, "placement": {"exclude": ["centerc"]}}
        )
        assert older["center"] == "centera"
        for job in (newest, older):
            done = await client.wait(job["id"], timeout=120, interval=0.3)
            assert done["state"] == "COMPLETED"


def _markers(home: Path) -> list[str]:
    found = subprocess.run(
        ["find", str(home), "-name", f"*{MARKER}*"], capture_output=True, text=True, check=False
    )
    return found.stdout.split()


@pytest.mark.parametrize("center", ["centera", "centerc"])
async def test_every_metacharacter_string_arrives_literally_at_a_real_center(
    catalog: Catalog, center: str
) -> None:
    home = Path(pwd.getpwnam("alice").pw_dir)
    async with catalog.client() as client:
        specs = [
            {"center": center, "app": {"name": "echo-args", "parameters": {"text": text}}}
            for text in CORPUS
        ]
        results = await client.submit_batch(specs)
        jobs = [r["job"] for r in results]
        assert all(r["status"] == 201 for r in results), results
        finals = await asyncio.gather(
            *(client.wait(j["id"], timeout=180, interval=0.5) for j in jobs)
        )
        for text, done in zip(CORPUS, finals, strict=True):
            assert done["state"] == "COMPLETED", (text, done)
            out = (await client.output(done["id"])).decode()
            assert out == f"{text}\nword=w\n1\n0.5\nfalse\nfast\n", (text, out)
    assert _markers(home) == []
