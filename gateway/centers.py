"""The configured centers and their adapters, built once per app."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from adapters.base import Adapter
from adapters.local import LocalAdapter
from adapters.pbs import PbsAdapter
from adapters.slurm import SlurmAdapter
from adapters.ssh import SSHPool, SSHTarget
from gateway.config import LoadedConfig
from gateway.errors import ApiError
from gateway.models import CenterConfig


@dataclass
class Center:
    config: CenterConfig
    adapter: Adapter

    @property
    def id(self) -> str:
        return self.config.id

    def public(self) -> dict[str, object]:
        return {
            "id": self.config.id,
            "name": self.config.name or self.config.id,
            "type": self.config.type,
            "region": self.config.region,
        }


class CenterRegistry:
    def __init__(
        self, centers: dict[str, Center], default: str | None = None, pool: SSHPool | None = None
    ) -> None:
        self._centers = centers
        self.default = default
        self._pool = pool

    def __iter__(self) -> Iterator[Center]:
        return iter(self._centers.values())

    def __len__(self) -> int:
        return len(self._centers)

    def find(self, center_id: str) -> Center | None:
        return self._centers.get(center_id)

    def get(self, center_id: str) -> Center:
        try:
            return self._centers[center_id]
        except KeyError:
            raise ApiError(
                404, "unknown_center", f"center: no center named {center_id!r}", field="center"
            ) from None

    async def close(self) -> None:
        for center in self._centers.values():
            await center.adapter.close()
        if self._pool is not None:
            await self._pool.close()


def build_registry(config: LoadedConfig) -> CenterRegistry:
    """One adapter per center; remote centers share one SSH pool."""
    pool = SSHPool()
    centers: dict[str, Center] = {}
    for cfg in config.centers.values():
        adapter: Adapter
        if cfg.type == "local":
            adapter = LocalAdapter(
                cfg.id,
                config.data_path(cfg.local.work_root),
                max_running=cfg.local.max_running,
            )
        else:
            assert cfg.ssh is not None  # guaranteed by CenterConfig validation
            target = SSHTarget(
                center_id=cfg.id,
                host=cfg.ssh.host,
                port=cfg.ssh.port,
                login=cfg.ssh.login,
                key_file=str(config.data_path(cfg.ssh.key_file)),
                host_keys=tuple(cfg.ssh.host_keys),
                connect_timeout=cfg.ssh.connect_timeout,
                command_timeout=cfg.ssh.command_timeout,
                keepalive_interval=cfg.ssh.keepalive_interval,
                max_sessions=cfg.ssh.max_sessions,
            )
            if cfg.type == "slurm":
                adapter = SlurmAdapter(
                    target,
                    pool,
                    work_root=cfg.scheduler.work_root,
                    default_queue=cfg.scheduler.default_queue,
                )
            else:
                adapter = PbsAdapter(
                    target,
                    pool,
                    work_root=cfg.scheduler.work_root,
                    default_queue=cfg.scheduler.default_queue,
                    dialect=cfg.scheduler.pbs_dialect,
                )
        centers[cfg.id] = Center(config=cfg, adapter=adapter)
    return CenterRegistry(centers, default=config.gateway.default_center, pool=pool)
