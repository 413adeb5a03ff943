"""The `scheduler` section of a batch-scheduler center file, as its types extend it."""

from __future__ import annotations

from pydantic import Field

from adapters.registry import TypeSettings

#: A queue (partition) name; the same rule as the gateway's other safe names.
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class BatchSettings(TypeSettings):
    work_root: str = Field(
        "~/.hpcfed", description="directory at the center that holds per-job directories"
    )
    default_queue: str | None = Field(None, pattern=QUEUE_NAME_PATTERN)
