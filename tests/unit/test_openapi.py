"""The OpenAPI document: one description per registered route, built from the router."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import jsonschema
import pytest
from aiohttp import web
from pydantic import ValidationError

from adapters.files.paths import MAX_PATH_BYTES, PathRefused, check_form
from gateway.config import load_config
from gateway.http.app import create_app
from gateway.http.auth import ROUTE_PERMISSIONS, add_route
from gateway.http.openapi import ROUTES, build_openapi, registered_routes, undocumented_routes
from gateway.jobs.models import JobSpec
from tests.conftest import REPO, config_with


def _app(tmp_path: Path) -> web.Application:
    config = config_with(load_config(REPO / "configs" / "gateway.yaml"), tmp_path / "data")
    return create_app(config)


def test_every_registered_route_has_a_description(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert undocumented_routes(app) == []
    assert {r.name for r in registered_routes(app)} == set(app[ROUTE_PERMISSIONS])
    assert set(ROUTES) == set(app[ROUTE_PERMISSIONS]), "ROUTES describes a route that is gone"


def test_a_route_added_without_a_description_is_reported(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    add_route(app, "GET", "/v1/new/{thing}", handler, name="new.thing", permission="jobs.read")
    assert undocumented_routes(app) == ["new.thing"]
    operation = build_openapi(app)["paths"]["/v1/new/{thing}"]["get"]
    assert operation["summary"] == "(undocumented)"


def test_document_has_each_route_with_params_bodies_errors_and_security(tmp_path: Path) -> None:
    app = _app(tmp_path)
    doc = build_openapi(app)
    assert doc["openapi"].startswith("3.1")
    operations = {
        op["operationId"]: op for methods in doc["paths"].values() for op in methods.values()
    }
    assert set(operations) == set(app[ROUTE_PERMISSIONS])
    submit = operations["jobs.submit"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobSpec"
    }
    assert submit["security"] == [{"bearer": []}]
    assert {"401", "403", "413", "422", "429", "502", "503"} <= set(submit["responses"])
    # No catch-all: every status an operation answers is declared for it.
    assert all("default" not in op["responses"] for op in operations.values())
    assert operations["healthz"]["security"] == []
    assert operations["openapi"]["security"] == []
    output = operations["jobs.output"]
    kinds = {(p["name"], p["in"], p["schema"]["type"]) for p in output["parameters"]}
    assert {("id", "path", "string"), ("stream", "path", "string")} <= kinds
    assert ("offset", "query", "integer") in kinds
    schemas = doc["components"]["schemas"]
    for name in ("JobSpec", "TransferRequest", "TokenRequest", "MkdirRequest", "Error"):
        assert name in schemas
    # Every $ref resolves inside the document, and the body schemas are valid JSON Schema.
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    resolver_doc = {"components": doc["components"], **schemas["JobSpec"]}
    jsonschema.Draft202012Validator(resolver_doc).validate({"command": "true"})


def _operations(tmp_path: Path) -> tuple[dict, dict]:
    doc = build_openapi(_app(tmp_path))
    ops = {op["operationId"]: op for methods in doc["paths"].values() for op in methods.values()}
    return doc, ops


def _param(op: dict, name: str) -> dict:
    return next(p for p in op["parameters"] if p["name"] == name)


def test_query_rules_are_the_servers(tmp_path: Path) -> None:
    _, ops = _operations(tmp_path)
    cursor = re.compile(_param(ops["jobs.list"], "cursor")["schema"]["pattern"])
    assert cursor.match("MjAyNi0xMi0wMVQwODowMDowMCswMDowMHxhYmM") and not cursor.match("\u00ef")
    state = re.compile(_param(ops["jobs.list"], "state")["schema"]["pattern"])
    assert state.match("running,QUEUED") and not state.match("RUNNING,nope")
    since = re.compile(_param(ops["usage.read"], "since")["schema"]["pattern"])
    for good in (
        "2026-12-01",
        "2026-12-01T08:00",
        "2026-12-01T08:00:00.5+05:30",
        "2026-12-01T08:00Z",
    ):
        assert since.match(good), good
    for bad in ("2026-02-30", "20261201", "2026-12-01 08:00", "yesterday"):
        assert not since.match(bad), bad
    group_by = re.compile(_param(ops["usage.read"], "group_by")["schema"]["pattern"])
    assert group_by.match("user,center") and not group_by.match("user,user")
    for name in ("jobs.list", "transfers.list", "evaluations.list"):
        assert _param(ops[name], "limit")["schema"] == {
            "type": "integer",
            "minimum": 1,
            "maximum": 1000,
        }


def test_paths_in_the_files_api_carry_the_servers_form_and_a_safe_length(tmp_path: Path) -> None:
    _, ops = _operations(tmp_path)
    schema = _param(ops["files.stat"], "path")["schema"]
    assert schema["maxLength"] * 4 <= MAX_PATH_BYTES
    pattern = re.compile(schema["pattern"])
    for good in ("a", "/home/alice/x", "a/~b", ".", "..x", "x" * 63):
        assert pattern.match(good), good
    for bad in ("..", "a/../b", "~/x", "a\\b", "a\x01b", "x" * 64):
        assert not pattern.match(bad), bad
        with contextlib.suppress(PathRefused):
            check_form(bad)
            assert bad in ("x" * 64,), bad  # only the name length is narrower than the server
    # Every path the pattern allows (of at most maxLength characters) passes check_form.
    check_form("/" + "/".join(["\U0001f680" * 63] * 16))


def test_a_job_spec_needs_exactly_one_of_script_and_command(tmp_path: Path) -> None:
    doc, _ = _operations(tmp_path)
    schemas = doc["components"]["schemas"]
    validator = jsonschema.Draft202012Validator(
        {"components": doc["components"], **schemas["JobSpec"]}
    )
    assert validator.is_valid({"command": "true", "arguments": ["x"]})
    assert validator.is_valid({"script": "echo\n", "command": None})
    for spec in (
        {},
        {"script": None, "command": None},
        {"script": "x", "command": "y"},
        {"script": "x", "arguments": ["a"]},
        {"command": "a\u0000b"},
        {"command": "x", "environment": {"1A": "v"}},
    ):
        assert not validator.is_valid(spec), spec
        with pytest.raises(ValidationError):
            JobSpec.model_validate(spec)


def test_range_answers_are_declared_with_their_headers(tmp_path: Path) -> None:
    _, ops = _operations(tmp_path)
    for name in ("files.download", "files.head"):
        unsatisfiable = ops[name]["responses"]["416"]
        assert unsatisfiable["headers"]["Content-Range"]["required"] is True
        partial = ops[name]["responses"]["206"]
        assert set(partial["headers"]) >= {"Content-Range", "X-File-Size", "Accept-Ranges"}
