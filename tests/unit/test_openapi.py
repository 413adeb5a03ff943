"""The OpenAPI document: one description per registered route, built from the router."""

from __future__ import annotations

from pathlib import Path

import jsonschema
from aiohttp import web

from gateway.app import create_app
from gateway.auth import ROUTE_PERMISSIONS, add_route
from gateway.config import load_config
from gateway.openapi import ROUTES, build_openapi, registered_routes, undocumented_routes
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
    assert {"401", "403", "422", "default"} <= set(submit["responses"])
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
