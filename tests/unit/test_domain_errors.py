"""Domain errors and their HTTP answers: every code raised anywhere has a status in
the one table, no status is written anywhere else, and a sub-app maps the same
domain errors into its own error shape."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, ConfigDict

from adapters.errors import CenterUnavailable, FileNotFound, InvalidCall
from adapters.files.paths import PathRefused
from gateway.errors import DomainError, Unprocessable
from gateway.http.errors import (
    STATUS,
    error_body,
    error_middleware,
    error_middleware_for,
    status_of,
)

REPO = Path(__file__).resolve().parents[2]
#: The server's code: the client and the CLI read answers, they raise none.
SERVER = [
    path
    for top in ("gateway", "adapters")
    for path in sorted((REPO / top).rglob("*.py"))
    if path.relative_to(REPO).parts[:2] not in {("gateway", "client"), ("gateway", "cli")}
]
#: The base of the domain errors; classes deriving from it are found in the sources.
BASES = {"DomainError", "Unprocessable"}
STATUS_LITERAL = re.compile(r"[45][0-9][0-9]")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in SERVER:
        yield path, ast.parse(path.read_text(), str(path))


def _error_classes() -> set[str]:
    """DomainError and every class deriving from it, by name, over all sources."""
    names = set(BASES)
    classes = [
        (node.name, {b.id for b in node.bases if isinstance(b, ast.Name)})
        for _, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    ]
    grown = True
    while grown:
        before = len(names)
        names |= {name for name, bases in classes if bases & names}
        grown = len(names) > before
    return names


def _fixed_code_classes() -> set[str]:
    """Error classes whose __init__ takes no code (it passes its own to super)."""
    fixed = set()
    for _, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    params = [a.arg for a in item.args.args[1:]]
                    if not params or params[0] != "code":
                        fixed.add(node.name)
    return fixed


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and type(n.value) is str}


def _code_arg(call: ast.Call, index: int) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "code":
            return keyword.value
    return call.args[index] if len(call.args) > index else None


def _codes_of(expr: ast.expr, scope: ast.AST, module: ast.Module) -> set[str] | None:
    """The codes an argument can be: a literal; a name bound in the function to
    literals (or to a lookup in a module-level dict naming them); None when it cannot be
    told from the source (`exc.code`: the class attributes are collected apart)."""
    if isinstance(expr, ast.Constant) and type(expr.value) is str:
        return {expr.value}
    if not isinstance(expr, ast.Name):
        return None
    found: set[str] = set()
    tables = {
        target.id: node.value
        for node in module.body
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == expr.id for t in node.targets
        ):
            found |= _strings(node.value)
            for name in ast.walk(node.value):
                if isinstance(name, ast.Name) and isinstance(
                    tables.get(name.id), ast.Dict | ast.DictComp
                ):
                    found |= _strings(tables[name.id])
    return found or None


def _raised() -> tuple[dict[str, list[str]], list[str]]:
    """{code: [where]} for every domain error built in the sources, and the calls
    whose code cannot be told."""
    classes = _error_classes()
    passing = classes - _fixed_code_classes()
    codes: dict[str, list[str]] = {}
    unknown: list[str] = []
    for path, tree in _trees():
        scopes = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        owner = {id(n): s for s in scopes for n in ast.walk(s)}
        for node in ast.walk(tree):
            where = f"{_rel(path)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ClassDef):
                # `code = "..."` on an error kind (the file errors of the adapters).
                for item in node.body:
                    if (
                        isinstance(item, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == "code" for t in item.targets)
                        and isinstance(item.value, ast.Constant)
                    ):
                        codes.setdefault(item.value.value, []).append(where)
                continue
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            is_super = (
                isinstance(func, ast.Attribute)
                and func.attr == "__init__"
                and isinstance(func.value, ast.Call)
                and isinstance(func.value.func, ast.Name)
                and func.value.func.id == "super"
            )
            if is_super:
                cls = next(
                    (
                        c
                        for c in ast.walk(tree)
                        if isinstance(c, ast.ClassDef) and any(n is node for n in ast.walk(c))
                    ),
                    None,
                )
                if cls is None or cls.name not in classes or cls.name in BASES:
                    continue
                index = 0
            elif name in passing or name == "error_response":
                index = 1 if name == "error_response" else 0  # error_response(status, code, ...)
            else:
                continue
            arg = _code_arg(node, index)
            scope = owner.get(id(node))
            if arg is None or (
                # An error class's __init__ handing its `code` parameter on: the code
                # is read where that class is built.
                isinstance(scope, ast.FunctionDef)
                and scope.name == "__init__"
                and isinstance(arg, ast.Name)
                and arg.id in {a.arg for a in scope.args.args}
            ):
                continue
            found = _codes_of(arg, scope or tree, tree)
            if found is None:
                if not (isinstance(arg, ast.Attribute) and arg.attr == "code"):
                    unknown.append(f"{where}: {ast.unparse(node)[:80]}")
                continue
            for code in found:
                codes.setdefault(code, []).append(where)
    return codes, unknown


def test_every_code_raised_has_a_status_in_the_table() -> None:
    codes, unknown = _raised()
    assert not unknown, "codes the test cannot read:\n" + "\n".join(unknown)
    # The collector finds what is known to be there: a domain raise, an adapter file
    # error's class attribute, a code chosen by a condition, a parser refusal.
    assert {"not_found", "file_not_found", "path_outside_roots", "header_too_large"} <= set(codes)
    missing = {code: where for code, where in codes.items() if code not in STATUS}
    assert not missing, f"codes without a status in gateway/http/errors.py: {missing}"
    assert "internal" not in codes, "one internal-error code: internal_error"


def test_every_code_in_the_table_is_raised_somewhere() -> None:
    codes, _ = _raised()
    unused = set(STATUS) - set(codes)
    assert not unused, f"codes in the table that nothing raises: {sorted(unused)}"


def _status_literals(path: Path) -> list[str]:
    """Decimal 4xx/5xx literals in code (not docstrings, not slice bounds)."""
    source = path.read_text()
    tree = ast.parse(source)
    in_slices = {id(n) for s in ast.walk(tree) if isinstance(s, ast.Slice) for n in ast.walk(s)}
    return [
        f"{_rel(path)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and type(node.value) is int
        and id(node) not in in_slices
        and STATUS_LITERAL.fullmatch(ast.get_source_segment(source, node) or "")
    ]


def test_no_status_number_outside_http() -> None:
    outside = [p for p in SERVER if _rel(p).split("/")[:2] != ["gateway", "http"]]
    found = [hit for path in outside for hit in _status_literals(path)]
    assert not found, f"HTTP status numbers outside gateway/http: {found}"


def test_no_domain_error_carries_a_status() -> None:
    """Statuses come from the table: no domain error is built with one, and an answer
    built by hand (error_response) gives its code's status from the table."""
    classes = _error_classes()
    wrong = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            args = [*node.args, *(k.value for k in node.keywords)]
            statuses = [
                a.value
                for a in args
                if isinstance(a, ast.Constant) and type(a.value) is int and 400 <= a.value < 600
            ]
            where = f"{_rel(path)}:{node.lineno}"
            if node.func.id in classes and statuses:
                wrong.append(f"{where}: {node.func.id} with status {statuses[0]}")
            if node.func.id == "error_response" and statuses:
                code = node.args[1] if len(node.args) > 1 else None
                if isinstance(code, ast.Constant) and STATUS.get(code.value) != statuses[0]:
                    wrong.append(f"{where}: {code.value} answered {statuses[0]}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DomainError("invalid_request", "limit: must be 1-1000", "limit"), 400),
        (Unprocessable("invalid_request", "dependencies[0].job: no job x of yours"), 422),
        (DomainError("unknown_center", "center: no center named 'x'", "center"), 404),
        (Unprocessable("unknown_center", "inputs[0].source.center: no center named 'x'"), 422),
        (DomainError("center_unavailable", "center alpha is down", center="alpha"), 503),
    ],
)
def test_status_of_a_domain_error(error: DomainError, status: int) -> None:
    assert status_of(error) == status


def test_the_error_body_carries_field_and_context_and_drops_none() -> None:
    error = DomainError("not_found", "job x not found", "id", center=None, job_id="x")
    assert error_body(error) == {
        "error": {"code": "not_found", "message": "job x not found", "field": "id", "job_id": "x"}
    }
    assert error_body(DomainError("internal_error", "boom")) == {
        "error": {"code": "internal_error", "message": "boom"}
    }


# ------------------------------------------------------------ a sub-app's own shape


def _tes_answer(error: DomainError) -> web.StreamResponse:
    """A second API's error shape (GA4GH TES-like): flat, the status in the body."""
    status = status_of(error)
    return web.json_response({"msg": error.message, "status_code": status}, status=status)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str


async def _raises(request: web.Request) -> web.Response:
    what = request.match_info["what"]
    if what == "domain":
        raise DomainError("not_found", "task t-1 not found", "id", task="t-1")
    if what == "center":
        raise CenterUnavailable("center alpha did not answer", center="alpha")
    if what == "file":
        raise FileNotFound("/home/alice/x: no such file", center="alpha")
    if what == "path":
        raise PathRefused("path: '..' is not allowed in a path", "path")
    if what == "invalid":
        _Body.model_validate({"name": 3, "extra": True})
    if what == "call":
        raise InvalidCall("offset and limit must not be negative", center="alpha")
    raise RuntimeError("a secret in a crash")


def _app() -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/v1/raise/{what}", _raises)
    tes = web.Application(middlewares=[error_middleware_for(_tes_answer)])
    tes.router.add_get("/raise/{what}", _raises)
    app.add_subapp("/ga4gh/tes/v1", tes)
    return app


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(_app())) as c:
        yield c


async def test_the_gateway_api_answers_in_its_one_shape(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/v1/raise/domain")
    assert response.status == 404
    assert await response.json() == {
        "error": {
            "code": "not_found",
            "message": "task t-1 not found",
            "field": "id",
            "task": "t-1",
        }
    }
    response = await client.get("/v1/raise/center")
    assert response.status == 503
    assert (await response.json())["error"]["center"] == "alpha"


@pytest.mark.parametrize(
    ("what", "status", "message"),
    [
        ("domain", 404, "task t-1 not found"),
        ("center", 503, "center alpha did not answer"),
        ("file", 404, "/home/alice/x: no such file"),
        ("path", 400, "path: '..' is not allowed in a path"),
        ("invalid", 422, "name: Input should be a valid string"),
        ("call", 500, "internal error; see the gateway log"),
        ("crash", 500, "internal error; see the gateway log"),
    ],
)
async def test_a_sub_app_maps_the_same_errors_into_its_own_shape(
    client: TestClient[web.Request, web.Application], what: str, status: int, message: str
) -> None:
    response = await client.get(f"/ga4gh/tes/v1/raise/{what}")
    assert response.status == status
    assert await response.json() == {"msg": message, "status_code": status}


async def test_a_sub_app_answers_the_routers_refusals_in_its_shape(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/ga4gh/tes/v1/nothing-here")
    assert response.status == 404
    assert (await response.json())["status_code"] == 404
    response = await client.post("/ga4gh/tes/v1/raise/domain")
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert (await response.json())["status_code"] == 405
