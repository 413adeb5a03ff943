"""Center types come from the registry alone: a type defined in the test tree
(tests/fake_center_type) runs a job through a real gateway, and a type nobody
registered is refused where the config names it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from adapters import registry
from adapters.registry import ENTRY_POINT_GROUP, center_type, known_types, registered
from gateway.centers.descriptor import schema_errors
from gateway.config import ConfigError, LoadedConfig, center_schema, load_center_file
from gateway.http.routes.keys import SERVICE
from tests.conftest import REPO, GatewayFactory, config_with
from tests.fake_center_type import FAKE_SCHED, FakeSchedAdapter

FAKE_CENTER = """\
id: fake
name: A scheduler of nothing
type: fakesched
region: test
fakesched:
  polls_to_finish: 3
"""


@pytest.fixture
def fakesched() -> Iterator[None]:
    """The fake type is registered for one test, then taken back."""
    with registered(FAKE_SCHED):
        yield


async def test_a_type_registered_from_outside_the_gateway_runs_a_job(
    fakesched: None, start_gateway: GatewayFactory, local_config: LoadedConfig, tmp_path: Path
) -> None:
    path = tmp_path / "fake.yaml"
    path.write_text(FAKE_CENTER)
    fake = load_center_file(path)
    assert fake.center_type is FAKE_SCHED and fake.settings.polls_to_finish == 3  # type: ignore[attr-defined]
    config = config_with(
        local_config, tmp_path / "data", centers={**local_config.centers, "fake": fake}
    )
    gw = await start_gateway(config)
    async with gw.client() as client:
        centers = {c["id"]: c for c in (await client.centers())}
        assert centers["fake"]["type"] == "fakesched"
        # Its descriptor names its type and holds to the published schema.
        descriptor = await client.computing_power("fake")
        assert descriptor["center"]["type"] == "fakesched"
        assert schema_errors(descriptor) == []
        job = await client.submit(
            {
                "name": "hello",
                "command": "echo",
                "arguments": ["from", "fakesched"],
                "center": "fake",
            }
        )
        assert job["center"] == "fake"
        done = await client.wait(job["id"], timeout=30)
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
        assert await client.output(job["id"]) == b"from fakesched\n"
    # The job went through the fake's own adapter, asked until it finished.
    (adapter,) = gw.app[SERVICE].centers.get("fake").adapters()
    assert isinstance(adapter, FakeSchedAdapter)
    (asked,) = [j.asked for j in adapter.jobs.values() if j.gateway_id == job["id"]]
    assert asked >= 3


def test_the_type_is_known_only_while_registered(fakesched: None) -> None:
    assert "fakesched" in known_types() and center_type("fakesched") is FAKE_SCHED
    assert '"fakesched"' in center_schema()


def test_an_installed_distribution_registers_its_type_through_an_entry_point(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    declared = [
        EntryPoint("fakesched", "tests.fake_center_type:FAKE_SCHED", ENTRY_POINT_GROUP),
        EntryPoint("lsf", "tests.fake_center_type:NO_SUCH_TYPE", ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: declared)
    monkeypatch.setattr(registry, "_BROKEN", {})  # what failed is forgotten after the test
    try:
        assert registry.load_entry_points() == ["fakesched"]
        assert center_type("fakesched") is FAKE_SCHED
        path = tmp_path / "lsf.yaml"
        path.write_text("id: lsf1\ntype: lsf\n")
        with pytest.raises(ConfigError) as refused:
            load_center_file(path)
        assert "type: must be one of the known center types (fakesched, local, pbs, slurm)" in (
            str(refused.value)
        )
        assert "entry point lsf (tests.fake_center_type:NO_SUCH_TYPE) failed to load" in (
            str(refused.value)
        )
    finally:
        registry.unregister("fakesched")


def test_an_unknown_type_is_refused_with_the_file_the_field_and_the_known_types(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lsf.yaml"
    path.write_text("id: lsf1\ntype: lsf\n")
    with pytest.raises(ConfigError) as refused:
        load_center_file(path)
    assert str(refused.value) == (
        f"{path}: type: must be one of the known center types (local, pbs, slurm), got 'lsf'"
    )
    assert "fakesched" not in known_types()  # the other tests' type was taken back
    checked = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "center", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert checked.returncode != 0
    assert checked.stderr.strip() == str(refused.value)
