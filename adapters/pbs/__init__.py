"""The PBS center type (OpenPBS, PBS Pro and the Torque dialect): qsub, qstat and
qdel over SSH."""

from __future__ import annotations

from adapters.pbs.adapter import PbsAdapter
from adapters.pbs.settings import PbsSettings
from adapters.registry import CenterSite, CenterType, register


def make_adapter(site: CenterSite) -> PbsAdapter:
    settings = site.settings
    assert isinstance(settings, PbsSettings) and site.target is not None and site.pool
    return PbsAdapter(
        site.target,
        site.pool,
        work_root=settings.work_root,
        default_queue=settings.default_queue,
        dialect=settings.pbs_dialect,
    )


CENTER_TYPE = register(
    CenterType(
        name="pbs",
        section="scheduler",
        settings_model=PbsSettings,
        make_adapter=make_adapter,
        directives_key="pbs",
        description="a PBS Pro, OpenPBS or Torque cluster reached over SSH",
    )
)
