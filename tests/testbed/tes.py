"""What the testbed's centers publish to GA4GH TES tasks: no container runtime, each
executor under bubblewrap (a private view of the paths its task names), and the host
images executors may name.

- every center: `debian:12` and `debian:bookworm` (the host's own Debian 12 userland);
- centera also: `hpcfed/snakemake`, the host with Snakemake (the repository's venv,
  reached through `<base>/tes/snakemake/bin/python`), which the workflow tests name as
  Snakemake's container image.

`tes_section(center, base)` is the `tes:` section of that center's gateway file;
`install(base)` (called by `Testbed.up`) writes the Snakemake image's bin dir.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.testbed.centers import CenterInfo

#: The host image names every center publishes.
HOST_IMAGES = ("debian:12", "debian:bookworm")
#: The image Snakemake's TES executor is told to use (`--container-image`).
SNAKEMAKE_IMAGE = "hpcfed/snakemake"
SNAKEMAKE_CENTER = "centera"


def snakemake_bin(base: Path) -> Path:
    return base / "tes" / "snakemake" / "bin"


def install(base: Path) -> None:
    """The Snakemake image's bin dir: `python` is the venv's interpreter (idempotent)."""
    bin_dir = snakemake_bin(base)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for parent in (bin_dir, bin_dir.parent, bin_dir.parent.parent):
        parent.chmod(0o755)
    venv_bin = Path(sys.executable).parent
    for name in ("python", "python3", "snakemake"):
        link = bin_dir / name
        target = venv_bin / name
        if link.is_symlink() and link.readlink() == target:
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(target)


def tes_section(center: CenterInfo, base: Path) -> dict[str, Any]:
    images: list[dict[str, Any]] = [{"name": name} for name in HOST_IMAGES]
    if center.id == SNAKEMAKE_CENTER:
        images.append({"name": SNAKEMAKE_IMAGE, "path": [str(snakemake_bin(base))]})
    return {"runtime": "none", "sandbox": "bubblewrap", "images": images}
