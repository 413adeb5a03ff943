"""Shared pieces of the adapter integration tests (tests/integration/test_adapters_*.py).

They use the session `testbed` fixture from tests/conftest.py (skips outside CI when the
testbed cannot start, fails under CI).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.base import JobRequest, NativeStatus
from adapters.batch import JobDirAdapter
from adapters.ssh import SSHPool, SSHTarget
from tests.testbed import Testbed

JOB_DEADLINE = 90.0  # seconds a short test job may take from submit to a final state


def target(tb: Testbed, center: str, **overrides: object) -> SSHTarget:
    """The center as the gateway would configure it, with its real pinned host key."""
    fields: dict[str, object] = {
        "center_id": center,
        "host": "127.0.0.1",
        "port": tb.center(center).ssh_port,
        "login": "alice",
        "key_file": str(tb.user_key("alice")),
        "host_keys": (tb.host_key(center),),
        "connect_timeout": 10.0,
        "command_timeout": 30.0,
    }
    fields.update(overrides)
    return SSHTarget(**fields)  # type: ignore[arg-type]


@pytest.fixture(name="pool")
async def pool_fixture() -> AsyncIterator[SSHPool]:
    """A fresh SSHPool per test, closed afterwards (import `pool_fixture` to use `pool`)."""
    p = SSHPool()
    yield p
    await p.close()


def job(script: str | None = None, **fields: object) -> JobRequest:
    """A small job with a fresh gateway id."""
    if script is not None:
        fields["script"] = script
    fields.setdefault("name", "adapter-test")
    return JobRequest(gateway_id=str(uuid.uuid4()), **fields)  # type: ignore[arg-type]


async def wait_for_status(
    adapter: JobDirAdapter,
    native_id: str,
    gateway_id: str,
    done: Callable[[NativeStatus], bool],
    timeout: float = JOB_DEADLINE,
) -> NativeStatus:
    """Poll status_many as the poller does until `done` holds, or fail at the deadline."""
    last: NativeStatus | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = (await adapter.status_many({native_id: gateway_id})).get(native_id)
                if last is not None and done(last):
                    return last
                await asyncio.sleep(0.3)
    except TimeoutError:
        pytest.fail(f"job {native_id} did not reach the awaited state in {timeout}s; last {last}")


def tcp_connections_to(port: int) -> int:
    """Established TCP connections from this process to 127.0.0.1:<port>."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and remote == f"0100007F:{port:04X}" and inode in inodes:
                count += 1
    return count
