"""The import rules of docs/architecture.md.

The contracts are in pyproject.toml ([tool.importlinter]); `lint-imports` checks them
on the real import graph, imports inside functions included, and names the chain of
every broken one. What import-linter cannot say (it forbids an external package only
whole, and aiohttp's client is allowed where aiohttp.web is not) is checked here on
the source: outside gateway/http/, nothing imports aiohttp's server; and no code but
the HTTP edge and the clients of HTTP servers speaks in HTTP statuses.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

#: aiohttp's server side: aiohttp.web and the modules it is made of (web_request,
#: web_response, web_log, web_protocol, ...), the abstract server classes (abc), the
#: gunicorn worker and the test server.
AIOHTTP_SERVER = re.compile(r"aiohttp\.(web|web_\w+|abc|worker|test_utils|pytest_plugin)(\.|$)")

#: Where HTTP statuses may be read or written, besides gateway/http/: clients of an
#: HTTP server (the API's, an OIDC provider's key set), reading the status it answered.
HTTP_CLIENTS = ("gateway/client/", "gateway/cli/", "gateway/identity/oidc.py")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: pip install -e '.[test]'"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _contract(name: str) -> dict[str, object]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    matches = [c for c in contracts if c["name"].startswith(name)]
    assert len(matches) == 1, f"one contract named {name!r} in pyproject.toml"
    return matches[0]


def _children(package: str) -> set[str]:
    """A package's subpackages and top-level modules, as dotted names."""
    children = set()
    for path in (REPO / package).iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            children.add(f"{package}.{path.name}")
        elif path.suffix == ".py" and path.name != "__init__.py":
            children.add(f"{package}.{path.stem}")
    return children


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_http_contract_names_every_other_gateway_package() -> None:
    contract = _contract("only gateway.http imports gateway.http")
    assert set(contract["source_modules"]) == _children("gateway") - {"gateway.http"}


def test_the_client_contract_forbids_every_other_gateway_package() -> None:
    contract = _contract("gateway.client imports nothing of the server")
    forbidden = {m for m in contract["forbidden_modules"] if m.startswith("gateway.")}
    assert forbidden == _children("gateway") - {"gateway.client"}
    assert "adapters" in contract["forbidden_modules"]


def test_the_adapter_machinery_contract_names_every_other_adapters_package() -> None:
    contract = _contract("the shared adapter machinery imports no center type")
    sources, types = set(contract["source_modules"]), set(contract["forbidden_modules"])
    assert sources | types == _children("adapters")
    assert not sources & types
    independent = _contract("center types import nothing of each other")["modules"]
    assert set(independent) == types


def test_a_forbidden_import_inside_a_function_breaks_a_contract(tmp_path: Path) -> None:
    """The check can fail: a copy of the tree whose adapters import gateway lazily."""
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("gateway", "adapters"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "adapters" / "errors.py"
    errors.write_text(
        errors.read_text(encoding="utf-8") + "\n\ndef _late():\n    import gateway.config\n",
        encoding="utf-8",
    )
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "adapters never import gateway BROKEN" in result.stdout
    assert "adapters.errors -> gateway.config" in result.stdout


def aiohttp_server_imports(source: str) -> list[str]:
    """Every use of aiohttp's server in `source`: imports of it (plain, from, by
    importlib) and attribute access such as `aiohttp.web.Application`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names = [f"{node.value.id}.{node.attr}"]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                names = [str(arg.value)]
        for name in names:
            if AIOHTTP_SERVER.match(name):
                found.append(f"l.{node.lineno}: {name}")
                break
    return found


def test_aiohttp_server_is_recognised_in_every_form() -> None:
    source = """
import aiohttp
import aiohttp.web
import aiohttp.web_request as wr
from aiohttp import web
from aiohttp import ClientSession, web_response
from aiohttp.web_log import AccessLogger
from aiohttp.abc import AbstractAccessLogger
import importlib
importlib.import_module("aiohttp.web")
app = aiohttp.web.Application()
session = aiohttp.ClientSession()
from aiohttp import ClientTimeout
from .web import local
"""
    found = aiohttp_server_imports(source)
    assert [f.split(":")[0] for f in found] == [
        "l.3",
        "l.4",
        "l.5",
        "l.6",
        "l.7",
        "l.8",
        "l.10",
        "l.11",
    ], found


@pytest.mark.parametrize("package", ["gateway", "adapters"])
def test_only_gateway_http_imports_aiohttp_server(package: str) -> None:
    http = REPO / "gateway" / "http"
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        if path.is_relative_to(http):
            continue
        for use in aiohttp_server_imports(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(REPO)} {use}")
    assert offenders == [], "aiohttp's server outside gateway/http/:\n" + "\n".join(offenders)


def _status_number(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int and 100 <= node.value <= 599:
        return node.value
    return None


def _names_a_status(name: str) -> bool:
    return "status" in name.lower() and "exit" not in name.lower()


def http_statuses(source: str) -> list[str]:
    """Every place `source` speaks in HTTP statuses, by line: a keyword argument named
    for a status given a number 100-599, a comparison of something named for a status
    (not an exit status) with such a number, and `HTTPStatus`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg and _names_a_status(node.arg):
            if (number := _status_number(node.value)) is not None:
                found.append((node.value.lineno, f"{node.arg}={number}"))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            members = [m for s in sides if isinstance(s, ast.Tuple | ast.List) for m in s.elts]
            numbers = [n for n in map(_status_number, sides + members) if n is not None]
            names = [getattr(s, "attr", None) or getattr(s, "id", "") for s in sides]
            if numbers and any(_names_a_status(name) for name in names):
                found.append((node.lineno, f"a status compared with {numbers[0]}"))
        elif isinstance(node, ast.Name) and node.id == "HTTPStatus":
            found.append((node.lineno, "HTTPStatus"))
        elif isinstance(node, ast.Attribute) and node.attr == "HTTPStatus":
            found.append((node.lineno, "HTTPStatus"))
    return [f"l.{line}: {what}" for line, what in sorted(found)]


def test_http_statuses_are_recognised() -> None:
    source = """
return_value(status=404)
if resp.status == 503: ...
if response.status in (200, 206): ...
if exit_status > 256: ...
limit(size=404)
code = HTTPStatus.NOT_FOUND
if job.status == "RUNNING": ...
"""
    assert [f.split(":")[0] for f in http_statuses(source)] == ["l.2", "l.3", "l.4", "l.7"]


@pytest.mark.parametrize("package", ["gateway", "adapters"])
def test_only_the_http_edge_speaks_in_http_statuses(package: str) -> None:
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        where = path.relative_to(REPO).as_posix()
        if where.startswith(("gateway/http/", *HTTP_CLIENTS)):
            continue
        for use in http_statuses(path.read_text(encoding="utf-8")):
            offenders.append(f"{where} {use}")
    assert offenders == [], "HTTP statuses outside the HTTP edge:\n" + "\n".join(offenders)
