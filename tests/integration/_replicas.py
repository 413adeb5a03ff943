"""Identical `hpcfed serve` replicas on one PostgreSQL database, each a real subprocess
(tests/integration/_served.py) with its own data dir and loopback port, all on one
config but for those: what an operator runs behind a load balancer."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from gateway.config import load_config
from gateway.identity.vault import Vault
from gateway.store import open_stores
from tests.integration._served import HPCFED, ServedGateway, cancel_named
from tests.testbed import Testbed
from tests.testbed.gatewayfiles import vault_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_store(dsn: str, **pool: object) -> dict[str, object]:
    """The `store` section of a replica's gateway.yaml."""
    return {"kind": "postgres", "dsn": dsn, **({"pool": pool} if pool else {})}


def seed_vault(gateway: ServedGateway, testbed: Testbed) -> None:
    """Migrate the database (`hpcfed db migrate`, as an operator would first) and copy
    the testbed's SSH keys of center logins from its vault file into the store's vault,
    under the same master key."""
    migrated = subprocess.run(
        [*HPCFED, "db", "migrate", "--config", str(gateway.config)],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert migrated.returncode == 0, migrated.stderr
    source = Vault.open(vault_config(testbed.base), Path)
    config = load_config(gateway.config)
    stores = open_stores(config)
    try:
        target = Vault.open(config.gateway.vault, config.data_path, entries=stores.vault)
        for name in source.names("ssh/"):
            target.put(name, source.get(name), source="testbed")
    finally:
        stores.audit.close()


@contextlib.contextmanager
def replicas(
    base: Path,
    testbed: Testbed,
    dsn: str,
    tag: str,
    *,
    count: int = 2,
    centers: tuple[str, ...] = ("centera",),
    start: bool = True,
    **settings: object,
) -> Iterator[list[ServedGateway]]:
    """`count` replicas named replica0, replica1 ... on the database `dsn`, started
    (unless `start` is false) one after the other, stopped at the end; this test's
    jobs (named `tag`) are cancelled at centera afterwards."""
    gateways = []
    for i in range(count):
        home = base / f"replica{i}"
        home.mkdir(parents=True, exist_ok=True)
        gateways.append(
            ServedGateway(
                home,
                testbed,
                tag,
                port=free_port(),
                centers=centers,
                store=postgres_store(dsn),
                **settings,
            )
        )
    seed_vault(gateways[0], testbed)
    try:
        if start:
            for gateway in gateways:
                gateway.start()
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()
        cancel_named(testbed, tag)
