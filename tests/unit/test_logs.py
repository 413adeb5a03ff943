"""JSON log lines and the request id that follows a request into SSH worker threads."""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.context import REQUEST_ID
from adapters.transport.keys import KeyData
from adapters.transport.ssh import SSHConnection, SSHTarget
from gateway.http.request_id import request_id_middleware, request_id_of, setup_request_id
from gateway.logs import JsonFormatter, setup_logging


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("hpcfed.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_has_time_level_logger_message_and_extra_fields() -> None:
    doc = json.loads(JsonFormatter().format(_record("hello %s", "world", center="centera")))
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "hpcfed.test"
    assert doc["message"] == "hello world"
    assert doc["center"] == "centera"
    assert doc["ts"].endswith("+00:00")
    assert "request_id" not in doc


def test_a_json_line_carries_the_request_id_being_served() -> None:
    token = REQUEST_ID.set("abc-123")
    try:
        doc = json.loads(JsonFormatter().format(_record()))
    finally:
        REQUEST_ID.reset(token)
    assert doc["request_id"] == "abc-123"


def test_an_exception_is_a_field_of_its_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "hpcfed.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    doc = json.loads(JsonFormatter().format(record))
    assert doc["exc_type"] == "RuntimeError"
    assert "boom" in doc["exception"]
    assert "\n" not in JsonFormatter().format(record)  # still one line


def test_serve_logging_writes_json_and_keeps_paramiko_quiet() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    try:
        setup_logging("info", "json", out)
        logging.getLogger("hpcfed.test").info("started", extra={"port": 8080})
        logging.getLogger("paramiko.transport").info("sftp session closed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("paramiko").setLevel(logging.NOTSET)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["port"] == 8080


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123", True), ("A.b_c-9", True), ("x" * 64, True), ("x" * 65, False), ("", False),
     ("a b", False), ("a\nb", False), ("é", False), (None, False)],
)  # fmt: skip
def test_a_client_request_id_is_kept_only_when_it_is_a_short_token(
    sent: str | None, kept: bool
) -> None:
    got = request_id_of(sent)
    if kept:
        assert got == sent
    else:
        assert len(got) == 32 and all(c in "0123456789abcdef" for c in got)


async def test_the_request_id_is_echoed_and_set_while_the_handler_runs() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)  # headers leave before the handler returns
        await response.write((REQUEST_ID.get() or "").encode())
        return response

    app = web.Application(middlewares=[request_id_middleware])
    setup_request_id(app)
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/", headers={"X-Request-Id": "abc-123"})
        assert resp.headers["X-Request-Id"] == "abc-123"
        assert await resp.text() == "abc-123"
        fresh = await client.get("/", headers={"X-Request-Id": "no spaces please"})
        assert fresh.headers["X-Request-Id"] == await fresh.text() != "no spaces please"
    assert REQUEST_ID.get() is None


def _pinned_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    kind, blob = raw.decode().split()[:2]
    return f"{kind} {blob}"


async def test_ssh_worker_threads_see_the_request_id() -> None:
    target = SSHTarget(
        center_id="centera",
        host="127.0.0.1",
        port=22,
        login="alice",
        credential=KeyData(label="unused", fetch=lambda: b""),
        host_keys=(_pinned_key(),),
    )
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        conn = SSHConnection(target, executor)
        token = REQUEST_ID.set("abc-123")
        try:
            seen = await conn._in_thread(REQUEST_ID.get)
        finally:
            REQUEST_ID.reset(token)
        assert seen == "abc-123"
        assert await conn._in_thread(REQUEST_ID.get) is None
