"""The gateway's view of the testbed: center files, gateway.yaml and known_hosts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tests.testbed.centers import GATEWAY_LOGIN, CenterInfo
from tests.testbed.procs import write_if_changed

HEADER = "# Written by the hpcfed testbed (python -m tests.testbed up); edits are lost.\n"


def center_document(center: CenterInfo, key_file: Path, host_key: str) -> dict[str, Any]:
    scheduler: dict[str, Any] = {"work_root": "~/.hpcfed"}
    if center.kind == "pbs":
        scheduler["pbs_dialect"] = "torque"
    return {
        "id": center.id,
        "name": center.name,
        "type": center.kind,
        "region": center.region,
        "ssh": {
            "host": "127.0.0.1",
            "port": center.ssh_port,
            "login": GATEWAY_LOGIN,
            "key_file": str(key_file),
            "host_keys": [host_key],
        },
        "scheduler": scheduler,
    }


def local_document() -> dict[str, Any]:
    return {"id": "local", "name": "Local (gateway host)", "type": "local"}


def gateway_document(base: Path) -> dict[str, Any]:
    return {
        "data_dir": str(base / "gateway" / "data"),
        "listen": {"host": "127.0.0.1", "port": 0},  # port 0: the gateway picks a free one
        "poll_interval": 0.5,
        "center_files": ["centers/*.yaml"],
        "auth": {"bootstrap_user": None},
    }


def _dump(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def write_gateway_files(
    base: Path, centers: Iterable[tuple[CenterInfo, str]], key_file: Path, known_hosts: str
) -> Path:
    """Write every file the gateway and OpenSSH clients need; returns gateway.yaml's path."""
    gateway_dir = base / "gateway"
    centers_dir = gateway_dir / "centers"
    for directory in (gateway_dir, centers_dir, gateway_dir / "data"):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    for center, host_key in centers:
        document = center_document(center, key_file, host_key)
        write_if_changed(centers_dir / f"{center.id}.yaml", _dump(document))
    write_if_changed(centers_dir / "local.yaml", _dump(local_document()))
    write_if_changed(base / "known_hosts", known_hosts)
    config = gateway_dir / "gateway.yaml"
    write_if_changed(config, _dump(gateway_document(base)))
    return config
