"""Shared fixtures: the real testbed, and real gateways on loopback ports."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.centers.config import CenterConfig
from gateway.client.core import HpcfedClient
from gateway.config import LoadedConfig, load_config
from gateway.http.app import create_app
from gateway.http.routes.keys import ISSUER, SERVICE
from gateway.http.server import GatewayRunner

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def testbed(_testbed_session: object) -> object:
    """The real centers (sshd, slurmctld, slurmd, PBS-dialect commands) and the testbed's
    PostgreSQL.

    Under CI an unavailable testbed fails the run; elsewhere the test is skipped
    with the reason. A testbed this session started is stopped at its end.
    """
    return _testbed_session


@pytest.fixture(scope="session")
def _testbed_session() -> Iterator[object]:
    # Under its own name, so that `postgres` reaches it from a module that overrides
    # `testbed` with a narrower scope.
    from tests.testbed import Testbed, TestbedError, TestbedUnavailable

    tb = Testbed()
    was_up = tb.is_up()
    try:
        tb.up()
    except (TestbedUnavailable, TestbedError) as exc:
        if IN_CI:
            pytest.fail(f"testbed could not start: {exc}")
        pytest.skip(f"testbed unavailable: {exc}")
    yield tb
    if not was_up:
        tb.down()


@pytest.fixture(scope="session")
def postgres(_testbed_session: object) -> Iterator[object]:
    """The testbed's PostgreSQL (127.0.0.1:25432, role hpcfed), serving.

    Sets PGPASSFILE for this process and every subprocess, so libpq finds the role's
    password; DSNs carry none. Yields a `tests.testbed.postgres.Server`.
    """
    from tests.testbed import Testbed
    from tests.testbed import postgres as pg

    assert isinstance(_testbed_session, Testbed)
    server = pg.Server(_testbed_session.base)
    if not server.serving():
        pytest.fail(f"the testbed's PostgreSQL does not serve on {server.dsn()}")
    before = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(server.pgpass)
    yield server
    if before is None:
        os.environ.pop("PGPASSFILE", None)
    else:
        os.environ["PGPASSFILE"] = before


@pytest.fixture
def pg_dsn(postgres: object) -> Iterator[str]:
    """The DSN of a fresh empty database (owned by hpcfed) in the testbed's PostgreSQL,
    dropped after the test (connections still open are cut)."""
    from tests.testbed import postgres as pg

    assert isinstance(postgres, pg.Server)
    name = f"t_{secrets.token_hex(6)}"
    dsn = postgres.create_database(name)
    yield dsn
    postgres.drop_database(name)


@dataclasses.dataclass
class Gateway:
    url: str
    app: web.Application
    config: LoadedConfig
    tokens: dict[str, str]
    runner: web.AppRunner

    async def stop(self) -> None:
        """Shut the gateway down as on SIGTERM (idempotent)."""
        await self.runner.cleanup()

    def client(self, user: str = "alice") -> HpcfedClient:
        return HpcfedClient(self.url, self.tokens[user])

    def issue(self, user: str, *roles: str, centers: tuple[str, ...] = ()) -> str:
        """A fresh token signed by this gateway (roles default to researcher)."""
        issued = self.app[ISSUER].issue(user, roles or ("researcher",), centers)
        return issued.token


GatewayFactory = Callable[..., Awaitable[Gateway]]


def config_with(
    base: LoadedConfig,
    data_dir: Path,
    *,
    centers: dict[str, CenterConfig] | None = None,
    **gateway_fields: object,
) -> LoadedConfig:
    """A copy of a loaded config with its own data dir and overrides."""
    return dataclasses.replace(
        base,
        data_dir=data_dir,
        centers=centers if centers is not None else base.centers,
        gateway=base.gateway.model_copy(update=gateway_fields),
    )


Users = tuple[str, ...] | dict[str, tuple[str, ...]]


async def launch_gateway(config: LoadedConfig, users: Users = ("alice", "bob")) -> Gateway:
    """A real gateway (aiohttp server on 127.0.0.1:<free port>) with a signed token per
    user: `users` names researchers, or maps each user to their roles."""
    roles = users if isinstance(users, dict) else {u: ("researcher",) for u in users}
    app = create_app(config)
    runner = GatewayRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    tokens = {user: app[ISSUER].issue(user, granted).token for user, granted in roles.items()}
    return Gateway(f"http://127.0.0.1:{port}", app, config, tokens, runner)


async def stop_gateway(gateway: Gateway) -> None:
    """Cancel what was left running, then shut down."""
    await _cancel_leftovers(gateway.runner.app)
    await gateway.stop()


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start real gateways for a test; they are stopped, their jobs cancelled, after it."""
    started: list[Gateway] = []

    async def start(config: LoadedConfig, users: Users = ("alice", "bob")) -> Gateway:
        gateway = await launch_gateway(config, users)
        started.append(gateway)
        return gateway

    yield start
    for gateway in reversed(started):
        await stop_gateway(gateway)


async def _cancel_leftovers(app: web.Application | None) -> None:
    """Cancel what a test left running, so the next test finds free centers."""
    if app is None or SERVICE not in app:
        return
    service = app[SERVICE]
    try:
        active = await service.store.active()
    except Exception:
        return  # the gateway was already stopped by the test
    for job in active:
        with contextlib.suppress(Exception):
            await service.cancel(None, job.id)


@pytest.fixture
def local_config(tmp_path: Path) -> LoadedConfig:
    """The embedded default config, with its data under tmp_path and fast polling."""
    return config_with(
        load_config(REPO / "configs" / "gateway.yaml"), tmp_path / "data", poll_interval=0.2
    )


@pytest.fixture
def testbed_config(testbed: object, tmp_path: Path) -> LoadedConfig:
    from tests.testbed import Testbed

    assert isinstance(testbed, Testbed)
    return config_with(load_config(testbed.gateway_config), tmp_path / "data", poll_interval=0.3)
