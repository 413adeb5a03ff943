"""The center types: type name -> how a center of that type is configured and run.

A `CenterType` holds everything the gateway asks of a type by its name: the model
of its section in a center file, the factory of its adapters and of its file
access, the key of `extra_directives` its jobs read, what the computing-power
descriptor calls it, and whether it is reached over SSH or runs on the gateway's
own machine. The gateway names no scheduler: it looks the center's `type` up here.

The built-in types (`slurm`, `pbs`, `local`) register themselves in their packages
(`adapters/slurm/__init__.py`, ...), loaded on the first lookup; so do the types
that installed distributions declare in the entry-point group
`hpcfed.center_types` (an entry point names a `CenterType`, or a callable
returning one). Anything else may call `register(CenterType(...))` before the
config is loaded.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from adapters.base import Adapter
from adapters.files.access import CenterFiles
from adapters.transport.openssh import OpenSSH
from adapters.transport.ssh import SSHPool, SSHTarget

log = logging.getLogger("hpcfed.adapters")

ENTRY_POINT_GROUP = "hpcfed.center_types"
#: A type's name, as center files write it in `type`.
TYPE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
BUILTIN_PACKAGES = ("adapters.slurm", "adapters.pbs", "adapters.local")


class TypeSettings(BaseModel):
    """Base of a type's section model: unknown fields refused, strings stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


@dataclass(frozen=True)
class CenterSite:
    """What a type's factories are given for one center and one login."""

    center_id: str
    #: The center's section of this type, validated by the type's `settings_model`.
    settings: BaseModel
    #: The login jobs and files run as; None for a type that runs on the gateway's host.
    login: str | None
    #: How to reach the center as `login` (None for a type that needs no SSH).
    target: SSHTarget | None
    pool: SSHPool | None
    #: The center file's `files.roots`.
    roots: Sequence[str]
    #: A path of the config -> absolute (`~` expanded, relative paths under data_dir).
    data_path: Callable[[str], Path]
    #: OpenSSH for bulk copies (None: not installed or not wanted), and from what size.
    bulk: OpenSSH | None = None
    bulk_threshold: int = 8 << 20


AdapterFactory = Callable[[CenterSite], Adapter]
FilesFactory = Callable[[CenterSite], CenterFiles]


def ssh_files(site: CenterSite) -> CenterFiles:
    """The files of a center reached over SSH: SFTP, OpenSSH for bulk copies."""
    from adapters.transport.sftp import SFTPFS

    if site.target is None or site.pool is None or site.login is None:
        raise ValueError(f"center {site.center_id}: SFTP needs an SSH target and a login")
    fs = SFTPFS(site.target, site.pool, site.bulk, site.bulk_threshold)
    return CenterFiles(site.center_id, site.login, fs, site.roots)


@dataclass(frozen=True)
class CenterType:
    """One center type, as `register` takes it."""

    name: str  # what center files write in `type`
    #: The key of the center file's section for this type ("scheduler", "local") and
    #: the model that section is validated by (defaults fill a missing section).
    section: str
    settings_model: type[BaseModel]
    make_adapter: AdapterFactory
    #: None: the type offers no file access.
    make_files: FilesFactory | None = ssh_files
    #: The key of a job's `extra_directives` passed to this type's scheduler (None:
    #: the type takes no extra directives).
    directives_key: str | None = None
    #: What the computing-power descriptor says the center's type is (default: `name`).
    descriptor_kind: str = ""
    #: The center file needs an `ssh` section; its logins come from `users`.
    needs_ssh: bool = True
    #: Jobs run on the gateway's machine as the gateway's own user: no `ssh`, no `users`.
    runs_on_gateway_host: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not TYPE_NAME_RE.match(self.name):
            raise ValueError(
                f"a center type's name must match {TYPE_NAME_RE.pattern}: {self.name!r}"
            )
        if self.needs_ssh and self.runs_on_gateway_host:
            raise ValueError(f"center type {self.name}: runs on the gateway host yet needs SSH")
        if not self.descriptor_kind:
            object.__setattr__(self, "descriptor_kind", self.name)


class UnknownCenterType(LookupError):
    """No center type of that name is registered."""

    def __init__(self, name: object, known: Sequence[str], broken: str = "") -> None:
        self.name = name
        self.known = tuple(known)
        #: Why an entry point of that name did not load, if one did not.
        self.broken = broken
        message = f"{name!r} is not a known center type (known: {', '.join(known)})"
        super().__init__(message + (f"; {broken}" if broken else ""))


_TYPES: dict[str, CenterType] = {}
#: Entry points that failed to load: name -> why.
_BROKEN: dict[str, str] = {}
_loaded = False


def register(center_type: CenterType) -> CenterType:
    """Make a type known by its name. Registering the same entry again is a no-op;
    another entry under a taken name is refused."""
    known = _TYPES.get(center_type.name)
    if known is not None and known is not center_type:
        raise ValueError(f"center type {center_type.name!r} is already registered")
    _TYPES[center_type.name] = center_type
    return center_type


def unregister(name: str) -> None:
    """Forget a type (tests register their own and take them back)."""
    _TYPES.pop(name, None)


@contextmanager
def registered(center_type: CenterType) -> Iterator[CenterType]:
    """The type is known for the duration of the block."""
    register(center_type)
    try:
        yield center_type
    finally:
        unregister(center_type.name)


def _load() -> None:
    """The built-in types, then those of the `hpcfed.center_types` entry points."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)
    load_entry_points()


def load_entry_points() -> list[str]:
    """Register the types that installed distributions declare in the entry-point group
    `hpcfed.center_types`; the names of those registered. An entry point that fails
    to load is logged and remembered (a center of that type is refused saying why);
    the others still load."""
    added = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = point.load()
            entry = found() if callable(found) and not isinstance(found, CenterType) else found
            if not isinstance(entry, CenterType):
                raise TypeError(f"it gave {type(entry).__name__}, not a CenterType")
            register(entry)
            added.append(entry.name)
        except Exception as exc:  # one broken plugin does not stop the others
            _BROKEN[point.name] = f"entry point {point.name} ({point.value}) failed to load: {exc}"
            log.error("center type %s", _BROKEN[point.name])
    return added


def known_types() -> list[str]:
    """The names of every registered type, sorted."""
    _load()
    return sorted(_TYPES)


def center_type(name: object) -> CenterType:
    """The type registered as `name`; UnknownCenterType names the known ones."""
    _load()
    found = _TYPES.get(name) if isinstance(name, str) else None
    if found is None:
        raise UnknownCenterType(name, known_types(), _BROKEN.get(str(name), ""))
    return found


def center_types() -> list[CenterType]:
    """Every registered type, sorted by name."""
    return [_TYPES[name] for name in known_types()]
