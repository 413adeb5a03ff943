"""The pure parts of `hpcfed apps` and `hpcfed run`: typing `--param` values by the
application's definition, the spec submitted, what `apps show` and `status` print,
and the canary outcomes `wait_canaries` reads off the listing."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cli.apps import (
    ParamError,
    describe_app,
    describe_application,
    offered_at,
    parse_params,
    run_spec,
)
from gateway.cli.evaluate import canary_line
from gateway.cli.main import build_parser
from gateway.client.apps import canary_outcomes

PARAMS: dict[str, dict[str, Any]] = {
    "steps": {"type": "int", "default": 250, "min": 1.0, "max": 100000.0},
    "temperature": {"type": "float", "default": 3.0},
    "verbose": {"type": "bool", "default": False},
    "mode": {"type": "choice", "choices": ["fast", "exact"], "default": "fast"},
    "label": {"type": "string", "pattern": "^[a-z]+$"},
    "input": {"type": "input_file", "default": "in.melt"},
}


def test_values_are_typed_by_the_definition() -> None:
    values = parse_params(
        [
            "steps=200",
            "temperature=1.5",
            "verbose=yes",
            "mode=exact",
            "label=7",
            "input=data/in.x",
        ],
        PARAMS,
        "lammps",
    )
    assert values == {
        "steps": 200,
        "temperature": 1.5,
        "verbose": True,
        "mode": "exact",
        "label": "7",
        "input": "data/in.x",
    }
    assert type(values["steps"]) is int and type(values["temperature"]) is float


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("0", False),
    ],
)
def test_bool_words(word: str, value: bool) -> None:
    assert parse_params([f"verbose={word}"], PARAMS, "x") == {"verbose": value}


def test_a_float_parameter_takes_an_integer_and_values_may_hold_equals_signs() -> None:
    assert parse_params(["temperature=2", "label=a=b"], PARAMS, "x") == {
        "temperature": 2.0,
        "label": "a=b",
    }


@pytest.mark.parametrize(
    ("pair", "named", "said"),
    [
        ("steps=abc", "steps: ", "must be an integer"),
        ("steps=1.5", "steps: ", "must be an integer"),
        ("steps=", "steps: ", "must be an integer"),
        ("temperature=warm", "temperature: ", "must be a number"),
        ("temperature=nan", "temperature: ", "finite"),
        ("temperature=inf", "temperature: ", "finite"),
        ("verbose=maybe", "verbose: ", "true or false"),
        ("nosuch=1", "nosuch: ", "lammps has no such parameter (it has: steps, temperature"),
        ("steps", "'steps'", "expected NAME=VALUE"),
        ("=5", "'=5'", "expected NAME=VALUE"),
    ],
)
def test_refusals_name_the_parameter(pair: str, named: str, said: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_params([pair], PARAMS, "lammps")
    assert str(err.value).startswith(named)
    assert said in str(err.value)


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(ParamError, match=r"^steps: given twice"):
        parse_params(["steps=1", "steps=2"], PARAMS, "lammps")


def test_an_application_without_parameters_refuses_any() -> None:
    with pytest.raises(ParamError, match=r"it has: none"):
        parse_params(["x=1"], {}, "bare")


def test_run_spec() -> None:
    assert run_spec("lammps", {"steps": 5}) == {
        "name": "lammps",
        "center": "auto",
        "app": {"name": "lammps", "parameters": {"steps": 5}},
    }
    assert run_spec(
        "lammps", {}, version="7Jan2022", center="centera", name="melt", queue="debug"
    ) == {
        "name": "melt",
        "center": "centera",
        "queue": "debug",
        "app": {"name": "lammps", "version": "7Jan2022", "parameters": {}},
    }


def test_run_arguments_parse() -> None:
    args = build_parser().parse_args(
        ["run", "lammps", "-p", "steps=5", "--param", "size=3", "--center", "centera", "--json"]
    )
    assert (args.command, args.app, args.param, args.center, args.json) == (
        "run",
        "lammps",
        ["steps=5", "size=3"],
        "centera",
        True,
    )
    assert build_parser().parse_args(["--json", "run", "lammps"]).json is True
    assert build_parser().parse_args(["run", "lammps"]).json is False
    assert build_parser().parse_args(["apps", "show", "x", "--json"]).json is True
    assert build_parser().parse_args(["--json", "apps"]).json is True
    apps = build_parser().parse_args(["apps", "--center", "centera"])
    assert (apps.apps_cmd, apps.center, apps.json) == (None, "centera", False)


def test_evaluate_json_takes_a_file_or_means_stdout() -> None:
    parse = build_parser().parse_args
    assert parse(["evaluate", "centera", "--json", "f.json"]).json_file == "f.json"
    args = parse(["evaluate", "centera", "--json", "--apps"])
    assert (args.json_file, args.apps) == ("-", True)
    assert parse(["evaluate", "centera"]).apps is False


VERSION = {
    "version": "7Jan2022",
    "centers": [
        {"center": "centera", "state": "verified", "checked_at": "2026-01-01T00:00:00+00:00"},
        {
            "center": "centerb",
            "state": "failed",
            "checked_at": "2026-01-02T00:00:00+00:00",
            "message": "lmp_mpi: command not found",
        },
    ],
}


def test_offered_at() -> None:
    assert offered_at(VERSION) == "centera verified, centerb failed"
    assert offered_at({"version": "1", "centers": []}) == "-"


def test_show_prints_versions_parameters_and_outputs() -> None:
    app = {
        "name": "lammps",
        "title": "LAMMPS",
        "description": "Molecular\n dynamics.",
        "source": "file",
        "versions": [VERSION, {"version": "old", "centers": []}],
        "parameters": {
            "steps": {**PARAMS["steps"], "description": "timesteps"},
            "mode": PARAMS["mode"],
            "label": {**PARAMS["label"], "required": True},
            "verbose": PARAMS["verbose"],
        },
        "outputs": ["log.lammps"],
        "limits": {"max_nodes": 64, "max_walltime": 172800.0},
    }
    lines = describe_app(app)
    assert lines[0] == "lammps: LAMMPS (from the gateway's files)"
    assert "  Molecular dynamics." in lines
    assert any(line.startswith("    centera: verified, checked 2026-01-01") for line in lines)
    (failed,) = [line for line in lines if line.startswith("    centerb")]
    assert failed.endswith(": lmp_mpi: command not found")
    assert "  old: no center offers it" in lines
    assert "  steps (int; default 250; min 1; max 100000): timesteps" in lines
    assert "  mode (choice; default fast; one of fast, exact)" in lines
    assert "  label (string; required; matching ^[a-z]+$)" in lines
    assert "  verbose (bool; default false)" in lines
    assert "outputs: log.lammps" in lines
    assert "limits: max_nodes 64, max_walltime 172800" in lines


def test_status_lines_of_an_application() -> None:
    rows = describe_application(
        {
            "name": "lammps",
            "version": "7Jan2022",
            "parameters": {"steps": 50, "label": "a b", "verbose": True},
            "modules": ["lammps/7Jan2022"],
            "outputs": ["log.lammps"],
        }
    )
    assert rows == [
        ("app", "lammps 7Jan2022"),
        ("parameters", "label='a b' steps=50 verbose=true"),
        ("modules", "lammps/7Jan2022"),
        ("outputs", "log.lammps"),
    ]


def test_canary_outcomes_wait_for_the_runs_own_verifications() -> None:
    run = {
        "id": "run-2",
        "bindings": [{"app": "lammps", "version": "7Jan2022"}, {"app": "hpcc", "version": "1.5"}],
    }

    def listing(lammps_run: str, hpcc_run: str | None) -> list[dict[str, Any]]:
        hpcc = (
            [{"center": "centera", "state": "failed", "evaluation_id": hpcc_run, "message": "m"}]
            if hpcc_run
            else [{"center": "centera", "state": "unverified", "evaluation_id": None}]
        )
        return [
            {
                "name": "lammps",
                "versions": [
                    {
                        "version": "7Jan2022",
                        "centers": [
                            {"center": "centerb", "state": "failed", "evaluation_id": "run-2"},
                            {
                                "center": "centera",
                                "state": "verified",
                                "evaluation_id": lammps_run,
                                "message": "3 checks passed (job 7)",
                                "checked_at": "t",
                            },
                        ],
                    }
                ],
            },
            {"name": "hpcc", "versions": [{"version": "1.5", "centers": hpcc}]},
        ]

    # An older run's verification is not this run's outcome.
    before = canary_outcomes(listing("run-1", None), "centera", run)
    assert [(o["state"], o["done"]) for o in before] == [("running", False), ("running", False)]
    half = canary_outcomes(listing("run-2", None), "centera", run)
    assert [(o["state"], o["done"]) for o in half] == [("verified", True), ("running", False)]
    after = canary_outcomes(listing("run-2", "run-2"), "centera", run)
    assert after == [
        {
            "app": "lammps",
            "version": "7Jan2022",
            "state": "verified",
            "message": "3 checks passed (job 7)",
            "checked_at": "t",
            "done": True,
        },
        {
            "app": "hpcc",
            "version": "1.5",
            "state": "failed",
            "message": "m",
            "checked_at": None,
            "done": True,
        },
    ]
    # A binding of an application the catalog does not have is failed at once.
    gone = canary_outcomes(
        listing("run-2", None), "centera", {**run, "bindings": [{"app": "old", "version": "1"}]}
    )
    assert [(o["state"], o["message"], o["done"]) for o in gone] == [
        ("failed", "old 1 is not in the catalog", True)
    ]
    assert canary_line(after[0]) == "lammps 7Jan2022: verified (3 checks passed (job 7))"
    assert canary_line(after[1]) == "hpcc 1.5: failed (m)"
