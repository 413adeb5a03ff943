"""The audit log: whole JSON lines, private, from many writers; and the middleware
that records every mutating request a real aiohttp app serves."""

from __future__ import annotations

import contextlib
import logging
import re
import stat
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.errors import DomainError
from gateway.http.audit import AUDIT_TARGET, Handler, audit_middleware
from gateway.http.errors import error_middleware, error_response
from gateway.identity.audit import AuditError, AuditLog, read_audit

Client = TestClient[web.Request, web.Application]
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.log"  # the directory does not exist yet


@pytest.fixture
def audit(log_path: Path) -> Iterable[AuditLog]:
    with AuditLog(log_path) as audit:
        yield audit


# ---------------------------------------------------------------- AuditLog


def test_lines_appear_in_order_with_the_standard_fields(audit: AuditLog, log_path: Path) -> None:
    audit.record(
        action="jobs.submit",
        actor="alice",
        roles=["researcher", "admin"],
        target={"job": "j-1", "center": "alpha"},
        outcome="ok",
        status=201,
        source="10.0.0.7",
    )
    audit.record(
        action="tokens.issue",
        actor=None,
        outcome="unauthenticated",
        status=401,
        error="unauthenticated",
        source="cli",
        reason="expired",
    )

    first, second = read_audit(log_path)
    assert TIME.match(str(first.pop("time")))
    assert first == {
        "actor": "alice",
        "roles": ["admin", "researcher"],
        "action": "jobs.submit",
        "target": {"job": "j-1", "center": "alpha"},
        "outcome": "ok",
        "status": 201,
        "source": "10.0.0.7",
    }
    # None values (actor, target) are left out; extra details are kept.
    assert TIME.match(str(second.pop("time")))
    assert second == {
        "roles": [],
        "action": "tokens.issue",
        "outcome": "unauthenticated",
        "status": 401,
        "error": "unauthenticated",
        "source": "cli",
        "reason": "expired",
    }


def test_each_record_is_exactly_one_line_even_with_newlines_in_values(
    audit: AuditLog, log_path: Path
) -> None:
    audit.record(action="a", actor="x\ny", outcome="ok", source="cli", note="one\ntwo\u2028three")
    text = log_path.read_bytes()
    assert text.count(b"\n") == 1 and text.endswith(b"\n")
    assert read_audit(log_path)[0]["note"] == "one\ntwo\u2028three"


def test_file_is_created_with_mode_0600_in_a_new_directory(audit: AuditLog, log_path: Path) -> None:
    audit.record(action="a", actor=None, outcome="ok", source="cli")
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600


def test_non_serializable_details_are_rendered_with_str(audit: AuditLog, log_path: Path) -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    audit.record(
        action="a",
        actor=None,
        outcome="ok",
        source="cli",
        path=Path("/x/y"),
        thing=Thing(),
        nested={"items": (1, Thing())},
    )
    entry = read_audit(log_path)[0]
    assert entry["path"] == "/x/y"
    assert entry["thing"] == "a thing"
    assert entry["nested"] == {"items": [1, "a thing"]}


def test_two_writers_on_threads_append_only_whole_lines(log_path: Path) -> None:
    # As if the gateway and an admin command wrote the same file at once. Long
    # lines make a torn or interleaved write likely if it could happen.
    gateway, cli = AuditLog(log_path), AuditLog(log_path)
    start = threading.Barrier(2)
    padding = "p" * 5000

    def write(audit: AuditLog, who: str) -> None:
        start.wait()
        for i in range(500):
            audit.record(action="a", actor=who, outcome="ok", source=who, seq=i, pad=padding)

    threads = [
        threading.Thread(target=write, args=(gateway, "gateway")),
        threading.Thread(target=write, args=(cli, "cli")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gateway.close()
    cli.close()

    entries = read_audit(log_path)  # raises on any torn line
    assert len(entries) == 1000
    for who in ("gateway", "cli"):
        seqs = [e["seq"] for e in entries if e["actor"] == who]
        assert seqs == list(range(500))  # each writer's own lines stay in order
    assert all(e["pad"] == padding for e in entries)


def test_a_failed_write_logs_the_action_and_raises_audit_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    full = Path("/dev/full")  # every write fails with ENOSPC
    if not full.exists():
        pytest.skip("no /dev/full here")
    with AuditLog(full) as audit, caplog.at_level(logging.ERROR, logger="hpcfed.audit"):
        with pytest.raises(AuditError):
            audit.record(
                action="vault.add_key", actor="root", outcome="ok", source="cli", secret="s3cr3t"
            )
    assert [r.name for r in caplog.records] == ["hpcfed.audit"]
    assert "vault.add_key" in caplog.text
    assert "s3cr3t" not in caplog.text


def test_recording_after_close_raises_audit_error(audit: AuditLog) -> None:
    audit.close()
    audit.close()  # twice is fine
    with pytest.raises(AuditError):
        audit.record(action="a", actor=None, outcome="ok", source="cli")


def test_a_new_log_object_appends_to_an_existing_file(log_path: Path) -> None:
    with AuditLog(log_path) as first:
        first.record(action="one", actor=None, outcome="ok", source="cli")
    with AuditLog(log_path) as second:
        second.record(action="two", actor=None, outcome="ok", source="cli")
    assert [e["action"] for e in read_audit(log_path)] == ["one", "two"]


def test_read_audit_names_the_corrupt_line(audit: AuditLog, log_path: Path) -> None:
    audit.record(action="a", actor=None, outcome="ok", source="cli")
    with log_path.open("a") as fh:
        fh.write('{"action": "tor\n')
    with pytest.raises(ValueError, match="line 2"):
        read_audit(log_path)


def test_read_audit_refuses_a_line_that_is_not_an_object(log_path: Path) -> None:
    log_path.parent.mkdir(parents=True)
    log_path.write_text('{"action": "a"}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 3: not a JSON object"):
        read_audit(log_path)


# ---------------------------------------------------------------- the middleware

PRINCIPAL = web.RequestKey("test_principal", str)


@web.middleware
async def _fake_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Stands in for the real auth middleware: it runs inside the audit one and
    # names the caller from a header.
    user = request.headers.get("X-User")
    if user:
        request[PRINCIPAL] = user
    return await handler(request)


def _actor(request: web.Request) -> tuple[str | None, Iterable[str]]:
    user = request.get(PRINCIPAL)
    return (user, ["researcher"]) if user else (None, ())


async def _create_job(request: web.Request) -> web.Response:
    request[AUDIT_TARGET] = {"job": "j-42"}
    return web.json_response({"id": "j-42"}, status=201)


async def _get_job(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["id"]})


async def _cancel_job(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def _answer(request: web.Request) -> web.StreamResponse:
    status = int(request.match_info["status"])
    if status < 400:
        return web.json_response({"ok": True}, status=status)
    return error_response(status, f"code_{status}", "as asked")


async def _api_error(request: web.Request) -> web.Response:
    raise DomainError("job_submitted", "job: already submitted", field="job")


async def _forbidden(request: web.Request) -> web.Response:
    raise web.HTTPForbidden()


async def _crash(request: web.Request) -> web.Response:
    raise RuntimeError("boom with a secret inside")


def _app(audit: AuditLog, *, map_errors: bool = True) -> web.Application:
    middlewares = [audit_middleware(audit, _actor)]
    if map_errors:
        middlewares.append(error_middleware)
    middlewares.append(_fake_auth_middleware)
    app = web.Application(middlewares=middlewares)
    app.router.add_post("/v1/jobs", _create_job, name="jobs.submit")
    app.router.add_get("/v1/jobs/{id}", _get_job, name="jobs.get")
    app.router.add_delete("/v1/jobs/{id}", _cancel_job)  # no name: method and pattern
    app.router.add_post("/v1/answer/{status}", _answer, name="answer")
    app.router.add_post("/v1/conflict/{id}", _api_error, name="conflict")
    app.router.add_post("/v1/forbidden", _forbidden, name="forbidden")
    app.router.add_post("/v1/crash", _crash, name="crash")
    return app


@contextlib.asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def client(audit: AuditLog) -> AsyncIterator[Client]:
    async with _serve(_app(audit)) as c:
        yield c


@pytest.fixture
async def bare_client(audit: AuditLog) -> AsyncIterator[Client]:
    """No error-mapping middleware: exceptions reach the audit middleware."""
    async with _serve(_app(audit, map_errors=False)) as c:
        yield c


async def test_post_and_delete_are_recorded_but_get_is_not(client: Client, log_path: Path) -> None:
    assert (await client.post("/v1/jobs", json={}, headers={"X-User": "alice"})).status == 201
    assert (await client.get("/v1/jobs/j-42")).status == 200
    assert (await client.delete("/v1/jobs/j-42", headers={"X-User": "alice"})).status == 204

    submit, cancel = read_audit(log_path)
    assert submit["action"] == "jobs.submit"
    assert cancel["action"] == "DELETE /v1/jobs/{id}"  # unnamed route: the pattern, not the id
    assert cancel["target"] == {"id": "j-42"}


async def test_records_route_name_actor_target_status_and_source(
    client: Client, log_path: Path
) -> None:
    await client.post("/v1/jobs", json={"script": "x"}, headers={"X-User": "alice"})

    (entry,) = read_audit(log_path)
    assert TIME.match(str(entry.pop("time")))
    assert entry == {
        "actor": "alice",  # set by an inner middleware: the callback runs after it
        "roles": ["researcher"],
        "action": "jobs.submit",
        "target": {"job": "j-42"},  # from AUDIT_TARGET
        "outcome": "ok",
        "status": 201,
        "source": "127.0.0.1",
    }


async def test_match_info_and_audit_target_are_merged(audit: AuditLog, log_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        request[AUDIT_TARGET] = {"center": "alpha"}
        return web.json_response({}, status=200)

    # A route that has both a URL parameter and an AUDIT_TARGET.
    app = _app(audit)
    app.router.add_put("/v1/jobs/{id}/hold", handler, name="jobs.hold")
    async with _serve(app) as client:
        assert (await client.put("/v1/jobs/j-7/hold")).status == 200

    (entry,) = read_audit(log_path)
    assert entry["action"] == "jobs.hold"
    assert entry["target"] == {"id": "j-7", "center": "alpha"}


async def test_json_error_code_and_status_are_recorded(client: Client, log_path: Path) -> None:
    response = await client.post("/v1/conflict/j-1", headers={"X-User": "bob"})
    assert response.status == 409

    (entry,) = read_audit(log_path)
    assert entry["action"] == "conflict"
    assert entry["target"] == {"id": "j-1"}
    assert entry["status"] == 409
    assert entry["error"] == "job_submitted"
    assert entry["outcome"] == "refused"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, "ok"),
        (303, "ok"),
        (401, "unauthenticated"),
        (403, "denied"),
        (404, "refused"),
        (429, "refused"),
        (500, "failed"),
        (503, "failed"),
    ],
)
async def test_outcome_follows_the_status(
    client: Client,
    log_path: Path,
    status: int,
    outcome: str,
) -> None:
    response = await client.post(f"/v1/answer/{status}", allow_redirects=False)
    assert response.status == status

    (entry,) = read_audit(log_path)
    assert (entry["status"], entry["outcome"]) == (status, outcome)
    assert entry.get("error") == (f"code_{status}" if status >= 400 else None)


async def test_unhandled_exception_mapped_to_500_is_recorded_as_failed(
    client: Client, log_path: Path
) -> None:
    assert (await client.post("/v1/crash")).status == 500

    (entry,) = read_audit(log_path)
    assert (entry["status"], entry["outcome"], entry["error"]) == (500, "failed", "internal_error")
    assert "boom" not in log_path.read_text()


async def test_exception_reaching_the_middleware_is_recorded_and_reraised(
    bare_client: Client, log_path: Path
) -> None:
    assert (await bare_client.post("/v1/crash")).status == 500  # aiohttp's own answer

    (entry,) = read_audit(log_path)
    assert (entry["action"], entry["status"], entry["outcome"]) == ("crash", 500, "failed")


async def test_http_exception_is_recorded_with_its_status_and_reraised(
    bare_client: Client, log_path: Path
) -> None:
    assert (await bare_client.post("/v1/forbidden")).status == 403

    (entry,) = read_audit(log_path)
    assert (entry["action"], entry["status"], entry["outcome"]) == ("forbidden", 403, "denied")


async def test_unmatched_post_is_recorded_with_its_path(client: Client, log_path: Path) -> None:
    assert (await client.post("/v1/nothing-here")).status == 404

    (entry,) = read_audit(log_path)
    assert entry["action"] == "POST /v1/nothing-here"
    assert (entry["outcome"], entry["error"]) == ("refused", "not_found")


async def test_headers_bodies_and_query_strings_never_reach_the_file(
    client: Client, log_path: Path
) -> None:
    await client.post(
        "/v1/jobs?token=query-secret-123",
        json={"script": "body-secret-456"},
        headers={"Authorization": "Bearer header-secret-789", "X-User": "alice"},
    )
    await client.post(
        "/v1/answer/401",
        headers={"Authorization": "Bearer header-secret-789"},
    )

    text = log_path.read_text()
    assert len(read_audit(log_path)) == 2
    for secret in ("query-secret-123", "body-secret-456", "header-secret-789", "Bearer"):
        assert secret not in text


async def test_a_failing_audit_write_does_not_change_the_answer(
    client: Client,
    audit: AuditLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The action has already happened; the client must still learn its result.
    audit.close()
    with caplog.at_level(logging.ERROR, logger="hpcfed.audit"):
        response = await client.post("/v1/jobs", json={})
    assert response.status == 201
    assert "jobs.submit" in caplog.text
