"""The PBS center type (OpenPBS, PBS Pro and the Torque dialect): qsub, qstat and
qdel over SSH."""

from __future__ import annotations

from adapters.batch.settings import batch_center_type
from adapters.pbs.adapter import PbsAdapter
from adapters.pbs.settings import PbsSettings
from adapters.registry import register

CENTER_TYPE = register(
    batch_center_type(
        "pbs", PbsAdapter, PbsSettings, "a PBS Pro, OpenPBS or Torque cluster reached over SSH"
    )
)
