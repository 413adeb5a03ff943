"""A PBS center's `scheduler` section."""

from __future__ import annotations

from typing import Literal

from adapters.batch.settings import BatchSettings


class PbsSettings(BatchSettings):
    """A PBS center's `scheduler` section: the batch settings and its dialect."""

    pbs_dialect: Literal["torque", "pbspro"] = "torque"
