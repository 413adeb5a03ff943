"""The Slurm center type: sbatch, squeue, sacct and scancel over SSH."""

from __future__ import annotations

from adapters.batch.settings import BatchSettings
from adapters.registry import CenterSite, CenterType, register
from adapters.slurm.adapter import SlurmAdapter


class SlurmSettings(BatchSettings):
    """A Slurm center's `scheduler` section."""


def make_adapter(site: CenterSite) -> SlurmAdapter:
    settings = site.settings
    assert isinstance(settings, SlurmSettings) and site.target is not None and site.pool
    return SlurmAdapter(
        site.target, site.pool, work_root=settings.work_root, default_queue=settings.default_queue
    )


CENTER_TYPE = register(
    CenterType(
        name="slurm",
        section="scheduler",
        settings_model=SlurmSettings,
        make_adapter=make_adapter,
        directives_key="slurm",
        description="a Slurm cluster reached over SSH",
    )
)
