"""Application definitions, parameter checks and the scripts rendered from them; the
scripts are run by a real bash, so what a program receives is what it got."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.apps.models import AppDefinition, AppRequest
from gateway.apps.render import check_parameters, find_binding, render, setup_lines
from gateway.centers.config import CenterConfig
from gateway.config import ConfigError, load_app_files
from gateway.errors import Unprocessable
from gateway.jobs.models import JobSpec
from tests.apps.corpus import CORPUS, MARKER

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def apps() -> dict[str, AppDefinition]:
    found = load_app_files(REPO, ["configs/apps/*.yaml", "tests/apps/*.yaml"])
    assert {"lammps", "hpcc", "gromacs", "echo-args"} <= set(found) or {
        "lammps",
        "hpcc",
        "echo-args",
    } <= set(found)
    return found


def center(**applications: object) -> CenterConfig:
    return CenterConfig.model_validate({"id": "x", "type": "local", "applications": applications})


def refused(app: AppDefinition, parameters: dict[str, object]) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        check_parameters(app, parameters)  # type: ignore[arg-type]
    return caught.value


def test_parameters_get_their_defaults_and_bounds_name_the_field(apps) -> None:
    lammps = apps["lammps"]
    values = check_parameters(lammps, {"steps": 200})
    assert values["steps"] == 200 and values["size"] == 10 and values["input"] == "in.melt"
    error = refused(lammps, {"steps": 200_000})
    assert error.field == "app.parameters.steps"
    assert error.message == "app.parameters.steps: must be <= 100000"
    assert refused(lammps, {"steps": 0}).message == "app.parameters.steps: must be >= 1"
    assert refused(lammps, {"steps": 2.5}).field == "app.parameters.steps"
    assert refused(lammps, {"steps": True}).field == "app.parameters.steps"
    assert refused(lammps, {"steps": "200"}).field == "app.parameters.steps"
    assert "no such parameter" in refused(lammps, {"stpes": 1}).message
    assert refused(lammps, {"stpes": 1}).field == "app.parameters.stpes"


def test_each_type_is_checked(apps) -> None:
    echo = apps["echo-args"]
    assert refused(echo, {"word": "Bad Word"}).message.startswith("app.parameters.word: must match")
    assert refused(echo, {"mode": "medium"}).message == (
        "app.parameters.mode: must be one of fast, slow"
    )
    assert refused(echo, {"flag": 1}).field == "app.parameters.flag"
    assert refused(echo, {"ratio": 1.5}).message == "app.parameters.ratio: must be <= 1"
    assert refused(echo, {"text": "a\0b"}).field == "app.parameters.text"
    lammps = apps["lammps"]
    for bad in ("../x", "/etc/passwd", ".hidden", "a//b", "a b", ""):
        assert refused(lammps, {"input": bad}).field == "app.parameters.input", bad
    assert check_parameters(lammps, {"input": "inputs/my.in"})["input"] == "inputs/my.in"


def test_a_spec_carries_exactly_one_of_script_command_and_app() -> None:
    spec = JobSpec.model_validate({"app": {"name": "lammps", "parameters": {"steps": 5}}})
    assert spec.app == AppRequest(name="lammps", parameters={"steps": 5})
    for extra in ({"script": "true"}, {"command": "true"}):
        with pytest.raises(ValidationError, match="exactly one of 'script', 'command' and 'app'"):
            JobSpec.model_validate({"app": {"name": "lammps"}, **extra})
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"app": {"name": "Not A Name"}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"run": {"executable": "x", "commands": [["x", "{{nope}}"]]}}, "{{nope}} is no parameter"),
        (
            {"run": {"executable": "x", "commands": [["x"]], "files": {"f": "{{text}}"}}},
            "a file may name only int, float, bool and choice parameters",
        ),
        ({"canary": {"parameters": {"count": 99}, "checks": [{"regex": "x"}]}}, "must be <= 10"),
        ({"versions": ["1.0", "1.0"]}, "versions repeat"),
        (
            {
                "canary": {
                    "checks": [
                        {"regex": "x", "number": {"regex": "(1)", "value": 1, "tolerance": 0}}
                    ]
                }
            },
            "exactly one of",
        ),
    ],
)
def test_a_bad_definition_is_refused(apps, change: dict[str, object], message: str) -> None:
    document = {**apps["echo-args"].model_dump(mode="json"), **change}
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        AppDefinition.model_validate(document)


def test_an_app_file_is_refused_with_its_path_and_field(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: broken\nversions: [1]\nrun: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_app_files(tmp_path, ["*.yaml"])
    text = str(caught.value)
    assert f"{tmp_path}/broken.yaml: run.executable: Field required" in text
    assert f"{tmp_path}/broken.yaml: canary: Field required" in text
    good = (REPO / "tests/apps/echo-args.yaml").read_text()
    (tmp_path / "broken.yaml").unlink()
    (tmp_path / "other.yaml").write_text(good)
    with pytest.raises(
        ConfigError, match=r"other\.yaml: name: 'echo-args' must be the file's name"
    ):
        load_app_files(tmp_path, ["*.yaml"])


def run_script(script: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    path = cwd / "job.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], cwd=cwd, capture_output=True, timeout=30)


@pytest.mark.parametrize("text", CORPUS)
def test_every_metacharacter_string_arrives_literally(apps, tmp_path: Path, text: str) -> None:
    echo = apps["echo-args"]
    config = center(bindings=[{"app": "echo-args", "version": "1.0"}])
    binding = find_binding(config, "echo-args", "1.0")
    assert binding is not None
    rendered = render(echo, "1.0", config, binding, check_parameters(echo, {"text": text}))
    result = run_script(rendered.script, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().split("\n")
    # printf '%s\n' prints each argument and a newline: the text comes back whole.
    assert result.stdout.decode().startswith(text + "\n")
    assert lines[-1] == ""
    assert not list(tmp_path.rglob(MARKER))
    assert not (Path.home() / MARKER).exists()
    assert (tmp_path / "settings.txt").read_text() == "count=1 ratio=0.5 flag=false mode=fast\n"


def test_the_binding_environment_comes_first_and_a_failing_setup_ends_the_job(
    apps, tmp_path: Path
) -> None:
    echo = apps["echo-args"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "say"
    wrapper.write_text('#!/bin/sh\nprintf "say:%s:" "$GREETING"; printf "%s|" "$@"\n')
    wrapper.chmod(0o755)
    config = center(
        bindings=[
            {
                "app": "echo-args",
                "version": "1.0",
                "path": [str(bin_dir)],
                "environment": {"GREETING": "hi there"},
                "setup": ['export GREETING="$GREETING!"'],
                "executable": "say",
            }
        ]
    )
    binding = find_binding(config, "echo-args")
    assert binding is not None and binding.version == "1.0"
    lines = setup_lines(config, binding)
    assert lines[0].startswith("export PATH=")
    rendered = render(echo, "1.0", config, binding, check_parameters(echo, {}))
    assert rendered.executable == "say"
    result = run_script(rendered.script, tmp_path)
    assert result.stdout.decode() == "say:hi there!:%s\\n|hello|word=w|1|0.5|false|fast|"
    config = center(bindings=[{"app": "echo-args", "version": "1.0", "setup": ["false"]}])
    binding = find_binding(config, "echo-args")
    assert binding is not None
    rendered = render(echo, "1.0", config, binding, check_parameters(echo, {}))
    result = run_script(rendered.script, tmp_path)
    assert result.returncode == 1 and result.stdout == b""


def test_modules_are_loaded_after_module_is_defined(apps) -> None:
    config = center(
        modules={"init": "/opt/lmod/init/bash", "paths": ["/opt/mods"]},
        bindings=[{"app": "lammps", "version": "7Jan2022", "modules": ["lammps/7Jan2022"]}],
    )
    binding = find_binding(config, "lammps")
    assert binding is not None
    lines = setup_lines(config, binding)
    assert lines[0] == "if ! type module >/dev/null 2>&1; then"
    assert "  for hpcfed_init in /opt/lmod/init/bash; do" in lines
    assert lines[-2:] == ["module use /opt/mods", "module load lammps/7Jan2022"]
    assert find_binding(config, "lammps", "8Feb2023") is None
    assert find_binding(config, "gromacs") is None


def test_a_canary_script_shows_its_files_and_keeps_the_exit_status(apps, tmp_path: Path) -> None:
    echo = apps["echo-args"]
    config = center(bindings=[{"app": "echo-args", "version": "1.0"}])
    binding = find_binding(config, "echo-args")
    assert binding is not None
    values = check_parameters(echo, echo.canary.parameters)
    rendered = render(echo, "1.0", config, binding, values, ["settings.txt"])
    result = run_script(rendered.script, tmp_path)
    out = result.stdout.decode()
    assert result.returncode == 0
    assert "==== hpcfed canary file: settings.txt ====\ncount=1 ratio=0.5" in out
    config = center(bindings=[{"app": "echo-args", "version": "1.0", "executable": "no-such-x"}])
    binding = find_binding(config, "echo-args")
    assert binding is not None
    rendered = render(echo, "1.0", config, binding, values, ["settings.txt"])
    result = run_script(rendered.script, tmp_path)
    assert result.returncode == 127
    assert b"==== hpcfed canary file: settings.txt ====" in result.stdout


def test_committed_app_schema_matches_the_model_and_the_files_validate(apps) -> None:
    import json

    import jsonschema
    import yaml

    from gateway.config import app_schema

    committed = (REPO / "configs" / "schema" / "app.schema.json").read_text()
    assert committed == app_schema(), "run `make schema`"
    schema = json.loads(committed)
    for path in sorted((REPO / "configs" / "apps").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
