"""The Slurm center type: sbatch, squeue, sacct and scancel over SSH."""

from __future__ import annotations

from adapters.batch.settings import BatchSettings, batch_center_type
from adapters.registry import register
from adapters.slurm.adapter import SlurmAdapter


class SlurmSettings(BatchSettings):
    """A Slurm center's `scheduler` section."""


CENTER_TYPE = register(
    batch_center_type("slurm", SlurmAdapter, SlurmSettings, "a Slurm cluster reached over SSH")
)
