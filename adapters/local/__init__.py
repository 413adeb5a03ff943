"""The local center type: jobs run as processes on the gateway's machine, as the
gateway's own user; its files are a directory there."""

from __future__ import annotations

import getpass

from adapters.files.access import CenterFiles
from adapters.files.local import LocalFS
from adapters.local.adapter import LocalAdapter
from adapters.local.settings import LocalSettings
from adapters.registry import CenterSite, CenterType, register


def make_adapter(site: CenterSite) -> LocalAdapter:
    settings = site.settings
    assert isinstance(settings, LocalSettings)
    work_root = site.data_path(settings.work_root)
    return LocalAdapter(site.center_id, work_root, max_running=settings.max_running)


def make_files(site: CenterSite) -> CenterFiles:
    settings = site.settings
    assert isinstance(settings, LocalSettings)
    home = site.data_path(settings.files_home)
    home.mkdir(parents=True, exist_ok=True)
    return CenterFiles(site.center_id, getpass.getuser(), LocalFS(str(home)), site.roots)


CENTER_TYPE = register(
    CenterType(
        name="local",
        section="local",
        settings_model=LocalSettings,
        make_adapter=make_adapter,
        make_files=make_files,
        needs_ssh=False,
        runs_on_gateway_host=True,
        description="jobs run as processes of the gateway's own user on its machine",
    )
)
