"""The gateway's view of the testbed: center files, gateway.yaml, the vault holding
each job user's SSH key, and known_hosts.

Every center maps the federation users alice and bob to the Unix users of the
same names; the accounting center also maps dora, whose login there has no
association. A test that wants other names maps them in a center config of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from gateway.config_models import VaultConfig
from gateway.identity.vault import Vault, ssh_key_name
from tests.testbed.apps import applications_section
from tests.testbed.centers import GATEWAY_LOGIN, CenterInfo
from tests.testbed.procs import write_if_changed
from tests.testbed.tes import tes_section

REPO = Path(__file__).resolve().parents[2]

HEADER = "# Written by the hpcfed testbed (python -m tests.testbed up); edits are lost.\n"


#: What each center publishes beside its scheduler's figures: hardware speed (for the
#: theoretical peak), prices and energy. centerc is the greenest and cheapest per
#: core-hour, centerb the only one with GPUs.
PUBLISHED: dict[str, dict[str, Any]] = {
    "centera": {
        "hardware": {"cpu": {"model": "x86-64 (AVX2)", "clock_ghz": 2.6, "flops_per_cycle": 16}},
        "price": {"currency": "CNY", "core_hour": 0.05, "gpu_hour": 0.0},
        "energy": {"pue": 1.5, "green_share": 0.2, "carbon_intensity": 600},
    },
    "centerb": {
        "hardware": {
            "cpu": {"model": "x86-64 (AVX-512)", "clock_ghz": 2.4, "flops_per_cycle": 32},
            "gpus": {"a100": {"peak_tflops": 9.7, "memory": "40GiB"}},
        },
        "price": {"currency": "CNY", "core_hour": 0.08, "gpu_hour": 6.0},
        "energy": {"pue": 1.2, "green_share": 0.6, "carbon_intensity": 350},
    },
    "centerc": {
        "hardware": {"cpu": {"model": "aarch64 (NEON)", "clock_ghz": 2.2, "flops_per_cycle": 8}},
        "price": {"currency": "CNY", "core_hour": 0.03, "gpu_hour": 0.0},
        "energy": {"pue": 1.3, "green_share": 0.9, "carbon_intensity": 120},
    },
    "centerd": {
        "hardware": {"cpu": {"model": "x86-64 (AVX2)", "clock_ghz": 3.0, "flops_per_cycle": 16}},
        "price": {"currency": "CNY", "core_hour": 0.04, "gpu_hour": 0.0},
        "energy": {"pue": 1.4, "green_share": 0.5, "carbon_intensity": 400},
    },
}


def center_document(center: CenterInfo, host_key: str) -> dict[str, Any]:
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
            "host_keys": [host_key],
        },
        "users": {user: {"login": user} for user in center.logins},
        "scheduler": scheduler,
        **PUBLISHED.get(center.id, {}),
        "applications": applications_section(center, center.dir.parent),
        "tes": tes_section(center),
    }


def vault_config(base: Path) -> VaultConfig:
    """Absolute paths, so every gateway a test starts (whatever its data dir) finds the keys."""
    gateway_dir = base / "gateway"
    return VaultConfig(
        path=str(gateway_dir / "vault.json"), master_key_file=str(gateway_dir / "master.key")
    )


def store_user_keys(base: Path, centers: Iterable[CenterInfo], user_keys: dict[str, Path]) -> None:
    """Each login's private key in the vault, per center where it logs in; rewritten only
    when it changed."""
    vault = Vault.open(vault_config(base), lambda value: Path(value), create=True)
    for center in centers:
        cid = center.id
        for user in center.logins:
            key_file = user_keys[user]
            name = ssh_key_name(cid, user)
            data = key_file.read_bytes()
            if not vault.has(name) or vault.get(name) != data:
                vault.put(name, data, source="testbed")


def local_document() -> dict[str, Any]:
    return {"id": "local", "name": "Local (gateway host)", "type": "local"}


def gateway_document(base: Path) -> dict[str, Any]:
    return {
        "data_dir": str(base / "gateway" / "data"),
        "listen": {"host": "127.0.0.1", "port": 0},  # port 0: the gateway picks a free one
        "poll_interval": 0.5,
        "center_files": ["centers/*.yaml"],
        # The catalog of the repository this testbed was started from.
        "app_files": [str(REPO / "configs" / "apps" / "*.yaml")],
        "auth": {"bootstrap_user": None},
        "vault": vault_config(base).model_dump(),
    }


def _dump(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def write_gateway_files(
    base: Path,
    centers: Iterable[tuple[CenterInfo, str]],
    user_keys: dict[str, Path],
    known_hosts: str,
) -> Path:
    """Write every file the gateway and OpenSSH clients need; returns gateway.yaml's path."""
    gateway_dir = base / "gateway"
    centers_dir = gateway_dir / "centers"
    for directory in (gateway_dir, centers_dir, gateway_dir / "data"):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    centers = list(centers)
    for center, host_key in centers:
        document = center_document(center, host_key)
        write_if_changed(centers_dir / f"{center.id}.yaml", _dump(document))
    store_user_keys(base, [center for center, _ in centers], user_keys)
    write_if_changed(centers_dir / "local.yaml", _dump(local_document()))
    write_if_changed(base / "known_hosts", known_hosts)
    config = gateway_dir / "gateway.yaml"
    write_if_changed(config, _dump(gateway_document(base)))
    return config
