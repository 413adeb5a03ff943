"""SSH pool behaviour under faults: reconnect backoff and the per-center thread bulkhead."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.errors import CenterUnavailable
from adapters.transport.keys import KeyData
from adapters.transport.ssh import SSHPool, SSHTarget


def _pinned_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    kind, blob = raw.decode().split()[:2]
    return f"{kind} {blob}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _target(center: str, port: int, login: str = "alice") -> SSHTarget:
    return SSHTarget(
        center_id=center,
        host="127.0.0.1",
        port=port,
        login=login,
        credential=KeyData(label="unused", fetch=lambda: b""),
        host_keys=(_pinned_key(),),
        connect_timeout=2.0,
    )


async def test_failed_connects_back_off_and_calls_in_between_fail_at_once() -> None:
    pool = SSHPool(max_threads=4)
    conn = pool.connection(_target("centera", _closed_port()))
    attempts = 0
    real_connect = conn._connect

    def counting_connect() -> object:
        nonlocal attempts
        attempts += 1
        return real_connect()

    conn._connect = counting_connect  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(CenterUnavailable) as caught:
                await conn.run("true")
            assert caught.value.center == "centera"
        assert time.monotonic() - started < 1.0  # refused fast, never hung
        assert attempts < 5  # one refused connect, then mostly "next attempt in ..."
        assert "next connect attempt in" in str(caught.value)
        await asyncio.sleep(0.3)  # past the first, shortest wait: a new attempt is made
        before = attempts
        with pytest.raises(CenterUnavailable):
            await conn.run("true")
        assert attempts >= before
    finally:
        await pool.close()


async def test_a_hung_center_holds_at_most_its_share_of_the_threads() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:  # accepts, never says a word
        server.settimeout(0.1)
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    pool = SSHPool(max_threads=4)  # two threads at most for any one center
    port = server.getsockname()[1]
    try:
        hung = [pool.connection(_target("hung", port, f"u{n}")) for n in range(6)]
        stuck = [asyncio.create_task(c.run("true")) for c in hung]
        await asyncio.sleep(0.3)
        other = pool.connection(_target("centera", _closed_port()))
        started = time.monotonic()
        with pytest.raises(CenterUnavailable, match="cannot connect"):
            await other.run("true")  # a thread was free for it at once
        assert time.monotonic() - started < 0.5
        results = await asyncio.gather(*stuck, return_exceptions=True)
        assert all(isinstance(r, CenterUnavailable) for r in results), results
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
        await pool.close()
