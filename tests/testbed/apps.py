"""Scientific applications at the testbed's centers: Debian's LAMMPS, GROMACS and HPCC,
published through Lmod module trees that differ per center, as real centers' do.

Each center has its own tree of Lua modulefiles and a software dir whose `bin` dirs hold
links to the Debian binaries, readable by every job user:

- centera: `<base>/centera/modulefiles`: `lammps/7Jan2022` (`lmp`, `LAMMPS_POTENTIALS`)
  and `hpcc/1.5.0`; software under `<base>/centera/sw`.
- centerb: `<base>/centerb/modulefiles`: `gromacs/2022.5` (`gmx`), `hpcc/1.5.0`, and a
  deliberately BROKEN `lammps/7Jan2022`: it loads, but the dir it puts on PATH does not
  exist, so its binding's executable `lmp_mpi` is not found.
- centerc: another layout and naming: `<base>/centerc/apps/modules`: `LAMMPS/2022.01`,
  whose PATH dir holds `lmp_serial` (-> /usr/bin/lmp), and `hpcc/1.5.0`; software under
  `<base>/centerc/apps/software`.
- centerd: `hpcc/1.5.0`.

`applications_section(center, base)` is the `applications:` section of that center's
gateway file (the bindings of the definitions in configs/apps/ to these modules).
A job script reaches the modules with::

    type module >/dev/null 2>&1 || . /usr/share/lmod/lmod/init/bash
    module use <tree>
    module load <name>

`install(centers)` (called by `Testbed.up`) writes the trees; it is idempotent.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.testbed.centers import CenterInfo
from tests.testbed.procs import TestbedUnavailable, write_if_changed

#: Lmod's bash initialisation, sourced by a job script when `module` is not defined yet.
LMOD_INIT = "/usr/share/lmod/lmod/init/bash"
#: The Debian binaries the modules publish, and the package of each.
BINARIES: dict[str, str] = {
    "/usr/bin/lmp": "lammps",
    "/usr/bin/gmx": "gromacs",
    "/usr/bin/hpcc": "hpcc",
    "/usr/bin/mpirun": "openmpi-bin",
    LMOD_INIT: "lmod",
}
#: LAMMPS's example inputs (package lammps-examples): `melt/in.melt` is the canary's.
LAMMPS_EXAMPLES = Path("/usr/share/lammps/examples")
MELT_INPUT = LAMMPS_EXAMPLES / "melt" / "in.melt"
LAMMPS_POTENTIALS = "/usr/share/lammps/potentials"

_HEAD = "-- Written by the hpcfed testbed (python -m tests.testbed up); edits are lost.\n"


@dataclass(frozen=True)
class Module:
    """One modulefile `<tree>/<name>.lua` and its software dir `<software>/<name>/bin`."""

    name: str  # "lammps/7Jan2022"
    description: str
    #: Names in the module's bin dir -> the binaries they link to.
    links: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    #: The bin dir it puts on PATH is never created (and removed if present).
    broken: bool = False


@dataclass(frozen=True)
class Binding:
    """One entry of the center's `applications.bindings`."""

    app: str
    version: str
    module: str
    executable: str | None = None
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CenterApps:
    tree: str  # the module tree, relative to the center's dir
    software: str  # where the modules' bin dirs live, relative to the center's dir
    modules: tuple[Module, ...]
    bindings: tuple[Binding, ...]


_HPCC = Module(
    "hpcc/1.5.0", "HPC Challenge 1.5.0 (Debian's hpcc, Open MPI)", {"hpcc": "/usr/bin/hpcc"}
)
_HPCC_BINDING = Binding("hpcc", "1.5.0", "hpcc/1.5.0")
_LAMMPS_ENV = {"LAMMPS_POTENTIALS": LAMMPS_POTENTIALS}

CENTER_APPS: dict[str, CenterApps] = {
    "centera": CenterApps(
        tree="modulefiles",
        software="sw",
        modules=(
            Module(
                "lammps/7Jan2022",
                "LAMMPS 7Jan2022 (Debian's lammps, serial)",
                {"lmp": "/usr/bin/lmp"},
                _LAMMPS_ENV,
            ),
            _HPCC,
        ),
        bindings=(
            Binding("lammps", "7Jan2022", "lammps/7Jan2022", environment={"OMP_NUM_THREADS": "1"}),
            _HPCC_BINDING,
        ),
    ),
    "centerb": CenterApps(
        tree="modulefiles",
        software="sw",
        modules=(
            Module(
                "gromacs/2022.5",
                "GROMACS 2022.5 (Debian's gromacs, thread-MPI)",
                {"gmx": "/usr/bin/gmx"},
                {"GMXDATA": "/usr/share/gromacs"},
            ),
            _HPCC,
            # Broken on purpose: loads fine, but its bin dir is missing (a center whose
            # install went wrong), so `lmp_mpi` is not found.
            Module(
                "lammps/7Jan2022",
                "LAMMPS 7Jan2022 (MPI build, not installed)",
                environment=_LAMMPS_ENV,
                broken=True,
            ),
        ),
        bindings=(
            Binding("gromacs", "2022.5", "gromacs/2022.5", environment={"OMP_NUM_THREADS": "1"}),
            _HPCC_BINDING,
            Binding("lammps", "7Jan2022", "lammps/7Jan2022", executable="lmp_mpi"),
        ),
    ),
    "centerc": CenterApps(
        tree="apps/modules",
        software="apps/software",
        modules=(
            Module(
                "LAMMPS/2022.01",
                "LAMMPS 2022.01 (Debian's lammps 7Jan2022, serial)",
                {"lmp_serial": "/usr/bin/lmp"},
                _LAMMPS_ENV,
            ),
            _HPCC,
        ),
        bindings=(
            Binding("lammps", "7Jan2022", "LAMMPS/2022.01", executable="lmp_serial"),
            _HPCC_BINDING,
        ),
    ),
    "centerd": CenterApps(
        tree="modulefiles", software="sw", modules=(_HPCC,), bindings=(_HPCC_BINDING,)
    ),
}


def _apps(center: CenterInfo) -> CenterApps:
    return CENTER_APPS[center.id]


def module_tree(center: CenterInfo) -> Path:
    """The center's module tree (what a job script gives `module use`)."""
    return center.dir / _apps(center).tree


def bin_dir(center: CenterInfo, module: str) -> Path:
    """The dir the module `module` puts first on PATH."""
    return center.dir / _apps(center).software / module / "bin"


def modules(center: CenterInfo) -> tuple[Module, ...]:
    return _apps(center).modules


def render_modulefile(module: Module, path_dir: Path) -> str:
    name, version = module.name.split("/", 1)
    lines = [
        _HEAD,
        f"help([[{module.description}]])\n",
        f'whatis("Name: {name}")\n',
        f'whatis("Version: {version}")\n',
        f'whatis("Description: {module.description}")\n',
        f'prepend_path("PATH", "{path_dir}")\n',
    ]
    lines += [f'setenv("{key}", "{value}")\n' for key, value in module.environment.items()]
    return "".join(lines)


def applications_section(center: CenterInfo, base: Path) -> dict[str, Any]:
    """The `applications:` section of `center`'s gateway file under testbed base `base`."""
    apps = _apps(center)
    bindings = []
    for binding in apps.bindings:
        bindings.append(
            {
                "app": binding.app,
                "version": binding.version,
                "modules": [binding.module],
                "path": [],
                "environment": dict(binding.environment),
                "setup": [],
                "executable": binding.executable,
                "partitions": [],
            }
        )
    return {
        "modules": {"init": LMOD_INIT, "paths": [str(base / center.id / apps.tree)]},
        "bindings": bindings,
    }


def module_prelude(center: CenterInfo, *names: str) -> str:
    """Bash lines that make `names` (modules of `center`) loaded: Lmod's init when `module`
    is not defined yet, `module use` of the center's tree, `module load` of each."""
    lines = [
        f"type module >/dev/null 2>&1 || . {LMOD_INIT}",
        f"module use {module_tree(center)}",
        *(f"module load {name}" for name in names),
    ]
    return "".join(line + "\n" for line in lines)


def check_binaries() -> None:
    """TestbedUnavailable naming the Debian package of a missing binary."""
    for binary, package in BINARIES.items():
        if not os.access(binary, os.X_OK):
            raise TestbedUnavailable(f"{binary} not found: apt-get install {package}")
    if not MELT_INPUT.is_file():
        raise TestbedUnavailable(f"{MELT_INPUT} not found: apt-get install lammps-examples")


def _make_dirs(root: Path, relative: Path | str) -> Path:
    """`root/relative` and every dir between, mode 0755: job users search down to the files."""
    path = root
    for part in Path(relative).parts:
        path = path / part
        path.mkdir(mode=0o755, exist_ok=True)
        path.chmod(0o755)
    return path


def _link(path: Path, target: str) -> None:
    if path.is_symlink() and os.readlink(path) == target:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def install(centers: Iterable[CenterInfo]) -> None:
    """Every center's module tree and software links; idempotent."""
    check_binaries()
    for center in centers:
        apps = _apps(center)
        tree = _make_dirs(center.dir, apps.tree)
        software = _make_dirs(center.dir, apps.software)
        for module in apps.modules:
            path_dir = bin_dir(center, module.name)
            _make_dirs(tree, module.name.split("/", 1)[0])
            write_if_changed(tree / f"{module.name}.lua", render_modulefile(module, path_dir))
            if module.broken:
                if path_dir.exists():
                    shutil.rmtree(path_dir)
                continue
            _make_dirs(software, path_dir.relative_to(software))
            for name, target in module.links.items():
                _link(path_dir / name, target)
