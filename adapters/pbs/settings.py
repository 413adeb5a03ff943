"""A PBS center's `scheduler` section."""

from __future__ import annotations

from typing import Any, Literal

from adapters.batch.settings import BatchSettings


class PbsSettings(BatchSettings):
    """A PBS center's `scheduler` section: the batch settings and its dialect."""

    pbs_dialect: Literal["torque", "pbspro"] = "torque"

    def adapter_options(self) -> dict[str, Any]:
        return {**super().adapter_options(), "dialect": self.pbs_dialect}
