"""`hpcfed apps`, `hpcfed apps show|put|delete`, `hpcfed run` and `hpcfed evaluate
--apps` as real processes against a real gateway on the embedded local center, whose
catalog is configs/apps (lammps, hpcc). The local center of the default config binds
no application; the last tests bind one of their own there (a definition put through
the CLI, run by /bin/echo), whose canary runs and whose jobs run as local processes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.centers.config import CenterConfig
from gateway.config import LoadedConfig
from tests.conftest import Gateway, GatewayFactory
from tests.integration.test_cli_files import Cli

pytestmark = pytest.mark.integration

USERS = {"alice": ("researcher",), "root": ("admin",)}

#: A definition small enough to run anywhere: echo its parameters into a file.
GREET = {
    "name": "greet",
    "title": "Greeting",
    "description": "Writes a greeting.",
    "versions": ["2.0", "1.0"],
    "parameters": {
        "who": {"type": "string", "default": "world", "pattern": "^[a-z ]{1,20}$"},
        "times": {"type": "int", "default": 1, "min": 1, "max": 5},
        "loud": {"type": "bool", "default": False},
    },
    "run": {
        "executable": "echo",
        "commands": [
            [
                "sh",
                "-c",
                'echo "$1 x$2 loud=$3" > greeting.txt',
                "sh",
                "{{who}}",
                "{{times}}",
                "{{loud}}",
            ],
            ["{{executable}}", "hello", "{{who}}"],
        ],
    },
    "outputs": ["greeting.txt"],
    "canary": {
        "parameters": {"who": "canary"},
        "checks": [
            {"file": "stdout", "regex": "^hello canary$"},
            {"file": "greeting.txt", "regex": "^canary x1"},
        ],
    },
}


def text(result: subprocess.CompletedProcess[bytes]) -> tuple[str, str]:
    return result.stdout.decode(), result.stderr.decode()


async def test_apps_lists_the_catalog_and_show_gives_the_parameters(
    start_gateway: GatewayFactory, local_config: LoadedConfig, tmp_path: Path
) -> None:
    gw = await start_gateway(local_config, USERS)
    cli = Cli(gw, tmp_path)
    result = await cli.run("apps")
    out, err = text(result)
    assert result.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["APP", "VERSION", "CENTERS"]
    rows = [line.split() for line in lines[1:]]
    assert ["hpcc", "1.5.0", "-"] in rows and ["lammps", "7Jan2022", "-"] in rows
    assert {row[2] for row in rows} == {"-"}  # the local center binds none of them
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)

    result = await cli.run("apps", "--center", "local", "--json")
    listed = json.loads(result.stdout)
    assert [a["name"] for a in listed] == sorted({row[0] for row in rows})
    assert all(v["centers"] == [] for a in listed for v in a["versions"])
    result = await cli.run("apps", "--center", "nowhere")
    assert result.returncode == 1 and "unknown_center" in text(result)[1]

    result = await cli.run("apps", "show", "lammps")
    out, err = text(result)
    assert result.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "lammps: LAMMPS molecular dynamics (from the gateway's files)"
    assert "  7Jan2022: no center offers it" in lines
    (steps,) = [line for line in lines if line.startswith("  steps ")]
    assert steps.startswith("  steps (int; default 250; min 1; max 100000): timesteps")
    assert "outputs: {{log}}" in lines
    result = await cli.run("apps", "show", "lammps", "--json")
    assert json.loads(result.stdout)["parameters"]["steps"]["max"] == 100000
    result = await cli.run("apps", "show", "nosuchapp")
    assert result.returncode == 1 and "unknown_app" in text(result)[1]


async def test_run_refuses_bad_parameters_before_submitting_and_shows_the_gateways_refusals(
    start_gateway: GatewayFactory, local_config: LoadedConfig, tmp_path: Path
) -> None:
    gw = await start_gateway(local_config, USERS)
    cli = Cli(gw, tmp_path)
    for args, named in (
        (("--param", "steps=abc"), "steps: must be an integer"),
        (("--param", "temperature=hot"), "temperature: must be a number"),
        (("--param", "nosuch=1"), "nosuch: lammps has no such parameter"),
        (("--param", "steps"), "expected NAME=VALUE"),
    ):
        result = await cli.run("run", "lammps", *args, "--center", "local")
        out, err = text(result)
        assert (result.returncode, out) == (2, ""), err
        assert named in err, err
    async with gw.client() as client:
        assert (await client.list())["jobs"] == []  # nothing was submitted

    # Typed right, but over the definition's max: the gateway's 422 names the field.
    result = await cli.run("run", "lammps", "--param", "steps=200000", "--center", "local")
    out, err = text(result)
    assert result.returncode == 1 and out == ""
    assert "app.parameters.steps: " in err and "100000" in err, err
    result = await cli.run("run", "nosuchapp")
    out, err = text(result)
    assert result.returncode == 1 and out == ""
    assert "app.name: " in err and "nosuchapp" in err, err
    # A good request of an application no center offers.
    result = await cli.run("run", "lammps", "--param", "steps=10")
    out, err = text(result)
    assert result.returncode == 1 and "app.name: no center offers lammps" in err, err
    result = await cli.run("run", "lammps", "--version", "1999", "--center", "local")
    assert result.returncode == 1 and "app.version: " in text(result)[1]


async def test_admins_put_and_delete_definitions(
    start_gateway: GatewayFactory, local_config: LoadedConfig, tmp_path: Path
) -> None:
    gw = await start_gateway(local_config, USERS)
    alice, root = Cli(gw, tmp_path), Cli(gw, tmp_path, "root")
    definition = tmp_path / "greet.yaml"
    definition.write_text(yaml.safe_dump(GREET))

    catalog = [a["name"] for a in json.loads((await alice.run("apps", "--json")).stdout)]
    assert "greet" not in catalog and {"hpcc", "lammps"} <= set(catalog)
    refused = await alice.run("apps", "put", str(definition))
    assert refused.returncode == 1 and "forbidden" in text(refused)[1]
    result = await root.run("apps", "put", str(definition))
    out, err = text(result)
    assert result.returncode == 0, err
    assert out == "put greet (versions 2.0, 1.0)\n"
    result = await alice.run("apps")
    assert ["greet", "2.0", "-"] in [line.split() for line in text(result)[0].splitlines()]
    result = await alice.run("apps", "show", "greet")
    out = text(result)[0]
    assert out.startswith("greet: Greeting (from put through the API)\n")
    assert "  loud (bool; default false)\n" in out
    assert "  who (string; default world; matching ^[a-z ]{1,20}$)\n" in out

    # The gateway checks the definition; a file's definition cannot be replaced.
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**GREET, "versions": []}))
    result = await root.run("apps", "put", str(broken))
    assert result.returncode == 1 and "versions: " in text(result)[1]
    lammps = tmp_path / "lammps.yaml"
    lammps.write_text(yaml.safe_dump({**GREET, "name": "lammps"}))
    result = await root.run("apps", "put", str(lammps))
    assert result.returncode == 1 and "app_defined_in_file" in text(result)[1]
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("versions: ['1']\n")
    result = await root.run("apps", "put", str(nameless))
    assert result.returncode == 1 and f"{nameless}: name: " in text(result)[1]

    assert (await alice.run("apps", "delete", "greet")).returncode == 1
    result = await root.run("apps", "delete", "greet")
    assert (result.returncode, text(result)[0]) == (0, "deleted greet\n")
    result = await alice.run("apps", "--json")
    assert [a["name"] for a in json.loads(result.stdout)] == catalog
    again = await root.run("apps", "delete", "greet")
    assert again.returncode == 1 and "unknown_app" in text(again)[1]


async def test_evaluate_apps_of_a_center_without_bindings_is_an_error(
    start_gateway: GatewayFactory, local_config: LoadedConfig, tmp_path: Path
) -> None:
    gw = await start_gateway(local_config, USERS)
    result = await Cli(gw, tmp_path, "root").run("evaluate", "local", "--apps")
    out, err = text(result)
    assert result.returncode == 2 and out == ""
    assert "local publishes no application" in err, err


def bound_config(config: LoadedConfig) -> LoadedConfig:
    """The local center binding greet 1.0 (run by /bin/echo) and greet 2.0 by a program
    that does not exist there."""
    doc = config.centers["local"].model_dump(exclude_unset=True)
    doc["applications"] = {
        "bindings": [
            {"app": "greet", "version": "1.0", "executable": "/bin/echo"},
            {"app": "greet", "version": "2.0", "executable": "/nonexistent/greet"},
        ]
    }
    return dataclasses.replace(config, centers={"local": CenterConfig.model_validate(doc)})


async def put_greet(root: Cli, tmp_path: Path) -> None:
    definition = tmp_path / "greet.yaml"
    definition.write_text(yaml.safe_dump(GREET))
    result = await root.run("apps", "put", str(definition))
    assert result.returncode == 0, text(result)


async def test_evaluate_apps_runs_the_canaries_and_exits_1_when_one_fails(
    start_gateway: GatewayFactory, local_config: LoadedConfig, tmp_path: Path
) -> None:
    gw: Gateway = await start_gateway(bound_config(local_config), USERS)
    root = Cli(gw, tmp_path, "root")
    await put_greet(root, tmp_path)
    result = await root.run("apps", "--center", "local")
    rows = [line.split(None, 2) for line in text(result)[0].splitlines()]
    assert ["greet", "1.0", "local unverified"] in rows

    result = await root.run("evaluate", "local", "--apps", "--timeout", "120")
    out, err = text(result)
    assert result.returncode == 1, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith("canaries of local: run ") and lines[0].endswith("2 bindings")
    (good,) = [line for line in lines if line.startswith("greet 1.0: ")]
    assert good.startswith("greet 1.0: verified (2 checks passed (job ")
    (bad,) = [line for line in lines if line.startswith("greet 2.0: ")]
    assert bad.startswith("greet 2.0: failed (")
    assert lines[-1] == "1 of 2 verified"
    run_id = lines[0].split()[4].rstrip(",")

    result = await root.run("apps", "--center", "local")
    rows = [line.split(None, 2) for line in text(result)[0].splitlines()]
    assert ["greet", "1.0", "local verified"] in rows
    assert ["greet", "2.0", "local failed"] in rows
    listed = json.loads((await root.run("apps", "--center", "local", "--json")).stdout)
    (greet,) = [a for a in listed if a["name"] == "greet"]
    assert {o["evaluation_id"] for v in greet["versions"] for o in v["centers"]} == {run_id}
    result = await root.run("apps", "show", "greet")
    shown = [line for line in text(result)[0].splitlines() if line.startswith("    local: ")]
    assert [line.split(",")[0] for line in shown] == ["    local: failed", "    local: verified"]
    assert shown[0].startswith("    local: failed, checked ") and "exit code" in shown[0]
    assert ": " not in shown[1].removeprefix("    local: ")  # no message for a verified one

    # --json: the outcomes on stdout, the progress on stderr.
    result = await root.run("evaluate", "local", "--apps", "--json", "--timeout", "120")
    out, err = text(result)
    assert result.returncode == 1, err
    document = json.loads(out)
    assert document["center"] == "local" and document["id"] != run_id
    assert sorted((r["version"], r["state"]) for r in document["results"]) == [
        ("1.0", "verified"),
        ("2.0", "failed"),
    ]
    assert "greet 1.0: verified" in err


async def test_run_submits_a_job_of_the_application_and_status_shows_it(
    start_gateway: GatewayFactory, local_config: LoadedConfig, tmp_path: Path
) -> None:
    gw: Gateway = await start_gateway(bound_config(local_config), USERS)
    alice = Cli(gw, tmp_path)
    await put_greet(Cli(gw, tmp_path, "root"), tmp_path)

    result = await alice.run(
        "run",
        "greet",
        "--version",
        "1.0",
        "--center",
        "local",
        "--param",
        "who=big world",
        "-p",
        "times=3",
        "-p",
        "loud=yes",
        "--name",
        "hello-run",
        "--wait",
        "--timeout",
        "60",
    )
    out, err = text(result)
    assert result.returncode == 0, (out, err)
    job_id = out.split()[0]
    assert out == f"{job_id} COMPLETED (exit code 0)\n"
    assert f"submitted {job_id} to local" in err
    async with gw.client() as client:
        job = await client.get(job_id)
        assert job["spec"]["name"] == "hello-run"
        assert job["spec"]["app"] == {
            "name": "greet",
            "version": "1.0",
            "parameters": {"who": "big world", "times": 3, "loud": True},
        }
        assert (await client.output(job_id)) == b"hello big world\n"
    result = await alice.run("status", job_id)
    out, err = text(result)
    assert result.returncode == 0, err
    lines = out.splitlines()
    assert "app:           greet 1.0" in lines
    assert "parameters:    loud=true times=3 who='big world'" in lines
    assert "outputs:       greeting.txt" in lines

    # --center auto goes only where the canary passed: not before it has run.
    result = await alice.run("run", "greet", "--version", "1.0")
    assert result.returncode == 1 and "not verified yet" in text(result)[1]
