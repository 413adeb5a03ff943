"""The SSH pool against the testbed's real sshd: reuse, pinning, reconnects, timeouts."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from adapters.errors import AuthenticationFailed, CenterUnavailable, HostKeyRejected
from adapters.transport.hostkeys import fingerprint, parse_pinned_key
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import SSHPool
from tests.integration._adapter_helpers import (  # noqa: F401 - pool_fixture provides `pool`
    pool_fixture,
    target,
    tcp_connections_to,
)
from tests.testbed import Testbed

pytestmark = pytest.mark.integration


async def test_commands_share_one_pooled_transport_over_one_tcp_connection(
    testbed: Testbed, pool: SSHPool
) -> None:
    conn = pool.connection(target(testbed, "centera"))
    port = testbed.center("centera").ssh_port
    timings = []
    for i in range(30):
        started = time.perf_counter()
        result = await conn.run(f"echo {i}")
        timings.append(time.perf_counter() - started)
        assert (result.exit_status, result.stdout) == (0, f"{i}\n".encode())
    results = await asyncio.gather(*(conn.run("echo $$") for _ in range(24)))
    assert len({r.stdout for r in results}) == 24  # 24 distinct remote shells...
    assert pool.connection(target(testbed, "centera")) is conn
    assert conn.connects == 1  # ...over one transport
    assert tcp_connections_to(port) == 1
    assert conn.commands_run == 54
    print(f"per-command latency over the pool: median {statistics.median(timings) * 1000:.1f} ms")


async def test_concurrent_first_calls_share_one_transport(testbed: Testbed, pool: SSHPool) -> None:
    conn = pool.connection(target(testbed, "centerb", max_sessions=4))
    results = await asyncio.gather(*(conn.run("true") for _ in range(12)))
    assert {r.exit_status for r in results} == {0}
    assert conn.connects == 1
    assert tcp_connections_to(testbed.center("centerb").ssh_port) == 1


async def test_changed_host_key_is_refused_naming_center_and_fingerprint(
    testbed: Testbed, pool: SSHPool
) -> None:
    # centera presents its own key; pin centerb's instead, as if centera's key had changed.
    conn = pool.connection(target(testbed, "centera", host_keys=(testbed.host_key("centerb"),)))
    seen = fingerprint(parse_pinned_key(testbed.host_key("centera"))[1])
    with pytest.raises(HostKeyRejected) as caught:
        await conn.run("true")
    error = caught.value
    assert error.center == "centera" and error.fingerprint == seen
    assert str(error) == (
        f"center centera: host key {seen} (ssh-ed25519) is not pinned in the center config; "
        "refusing to connect"
    )
    assert conn.commands_run == 0


async def test_host_key_of_an_unpinned_type_is_refused(testbed: Testbed, pool: SSHPool) -> None:
    rsa = (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDJo540qrAWzLSmVofNSr9EmrxP+2br8dTx9AfdXDRlARZv4xOws"
        "rXUBlEIB0dsCZ7AJ6t5EeIudwmiaD/uMzbgIje35+dLl5CcpURtOp4Pdi7Q0eJphp+KD/z1gXJqVf+DQbY7vuYC"
        "osf9fRD3LtK+oQJcUKFsu9kSr/Ro/Q54ugqI5fedOsuH1boNupP+TkErwmTizO1pKASpWqs2C8TIVNF+zjjrH4Ay"
        "3Yt3o0imADscjYNaOPOteqnR8szt33Q1dswoipFffUnCMXEx/8JahqdNO8t3jlEw2I/I+O5C8/sMDm9zWzROPufa"
        "4hCTCgQmBW/XMvXbyWrreeDh/xYP"
    )
    conn = pool.connection(target(testbed, "centera", host_keys=(rsa,)))
    with pytest.raises(HostKeyRejected, match="center centera: the server offers no host key"):
        await conn.run("true")


async def test_next_call_reconnects_after_the_transport_is_closed(
    testbed: Testbed, pool: SSHPool
) -> None:
    conn = pool.connection(target(testbed, "centera"))
    assert (await conn.run("echo one")).stdout == b"one\n"
    assert conn.transport is not None
    conn.transport.close()
    assert (await conn.run("echo two")).stdout == b"two\n"
    assert conn.connects == 2
    assert tcp_connections_to(testbed.center("centera").ssh_port) == 1


async def test_command_timeout_raises_center_unavailable_and_the_pool_lives_on(
    testbed: Testbed, pool: SSHPool
) -> None:
    conn = pool.connection(target(testbed, "centera"))
    started = time.monotonic()
    with pytest.raises(CenterUnavailable, match="did not finish within 1s") as caught:
        await conn.run("sleep 30", timeout=1)
    assert time.monotonic() - started < 5
    assert caught.value.center == "centera"
    assert (await conn.run("echo still here")).stdout == b"still here\n"
    assert conn.connects == 1


async def test_refused_key_is_an_authentication_failure_without_key_content(
    testbed: Testbed, pool: SSHPool
) -> None:
    bob_key = testbed.user_key("bob")
    conn = pool.connection(target(testbed, "centera", credential=KeyFile(str(bob_key))))
    with pytest.raises(AuthenticationFailed) as caught:
        await conn.run("true")
    assert caught.value.center == "centera"
    assert str(bob_key) in str(caught.value)
    secret_lines = [x for x in bob_key.read_text().splitlines() if "PRIVATE KEY" not in x]
    assert not any(line in str(caught.value) for line in secret_lines if line)


async def test_missing_key_file_is_reported_by_path(testbed: Testbed, pool: SSHPool) -> None:
    conn = pool.connection(target(testbed, "centera", credential=KeyFile("/nonexistent/alice_key")))
    with pytest.raises(AuthenticationFailed, match="cannot read key file /nonexistent/alice_key"):
        await conn.run("true")


async def test_closed_port_is_center_unavailable(testbed: Testbed, pool: SSHPool) -> None:
    conn = pool.connection(target(testbed, "centera", port=1, connect_timeout=3.0))
    with pytest.raises(CenterUnavailable, match=r"center centera: .*cannot connect"):
        await conn.run("true")


async def test_stdin_and_large_interleaved_output_streams(testbed: Testbed, pool: SSHPool) -> None:
    conn = pool.connection(target(testbed, "centerc"))
    assert (await conn.run("cat", stdin=b"through stdin\n")).stdout == b"through stdin\n"
    # Both streams well beyond one channel window, written at the same time.
    result = await conn.run("head -c 5000000 /dev/zero & head -c 5000000 /dev/zero >&2; wait")
    assert (len(result.stdout), len(result.stderr), result.exit_status) == (5000000, 5000000, 0)
    assert (await conn.run("exit 42")).exit_status == 42


async def test_sftp_and_home(testbed: Testbed, pool: SSHPool) -> None:
    conn = pool.connection(target(testbed, "centera"))
    home = await conn.home()
    assert home.startswith("/") and home.endswith("alice")
    assert (await conn.run("pwd")).stdout.decode().strip() == home
    names = await conn.sftp(lambda sftp: sftp.listdir(home))
    assert isinstance(names, list)
    before = conn.commands_run
    assert await conn.home() == home
    assert conn.commands_run == before  # cached, and SFTP is no exec anyway
