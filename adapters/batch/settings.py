"""What the batch-scheduler center types share: the `scheduler` section of their
center files (each type extends it), and how such a type is registered."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field

from adapters.base import Adapter
from adapters.registry import CenterSite, CenterType, TypeSettings
from adapters.transport.ssh import SSHPool, SSHTarget

#: A queue (partition) name; the same rule as the gateway's other safe names.
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class BatchSettings(TypeSettings):
    work_root: str = Field(
        "~/.hpcfed", description="directory at the center that holds per-job directories"
    )
    default_queue: str | None = Field(None, pattern=QUEUE_NAME_PATTERN)

    def adapter_options(self) -> dict[str, Any]:
        """The keyword arguments of the type's adapter these settings give."""
        return {"work_root": self.work_root, "default_queue": self.default_queue}


class BatchAdapterClass(Protocol):
    def __call__(self, target: SSHTarget, pool: SSHPool, **options: Any) -> Adapter: ...


def batch_center_type(
    name: str, adapter: BatchAdapterClass, settings: type[BatchSettings], description: str
) -> CenterType:
    """A scheduler reached over SSH: its `scheduler` section, files over SFTP, and the
    extra directives a job gives under the type's name."""

    def make_adapter(site: CenterSite) -> Adapter:
        options = site.settings
        assert isinstance(options, settings) and site.target is not None and site.pool
        return adapter(site.target, site.pool, **options.adapter_options())

    return CenterType(
        name=name,
        section="scheduler",
        settings_model=settings,
        make_adapter=make_adapter,
        directives_key=name,
        description=description,
    )
