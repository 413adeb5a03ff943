"""A local center's `local` section."""

from __future__ import annotations

from pydantic import Field

from adapters.registry import TypeSettings


class LocalSettings(TypeSettings):
    work_root: str = Field("local-jobs", description="relative paths are under data_dir")
    max_running: int = Field(4, ge=1, le=1024)
    files_home: str = Field(
        "local-files", description="what {home} means in file roots here; under data_dir"
    )
