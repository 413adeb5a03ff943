"""Identical `hpcfed serve` replicas on one PostgreSQL database, each a real subprocess
(tests/integration/_served.py) with its own data dir and loopback port, all on one
config but for those: what an operator runs behind a load balancer."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from tests.integration._served import ServedGateway, cancel_named
from tests.testbed import Testbed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_store(dsn: str, **pool: object) -> dict[str, object]:
    """The `store` section of a replica's gateway.yaml."""
    return {"kind": "postgres", "dsn": dsn, **({"pool": pool} if pool else {})}


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
    try:
        if start:
            for gateway in gateways:
                gateway.start()
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()
        cancel_named(testbed, tag)
