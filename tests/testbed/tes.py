"""What the testbed's centers publish to GA4GH TES tasks: no container runtime, each
executor under bubblewrap (a private view of the paths its task names), and the host
images executors may name: `debian:12` and `debian:bookworm`, the host's own Debian 12
userland, at every center. A test that needs another image (the Snakemake workflow
test's) adds it to its own copy of a center's config.

`tes_section(center)` is the `tes:` section of that center's gateway file.
"""

from __future__ import annotations

from typing import Any

from tests.testbed.centers import CenterInfo

#: The host image names every center publishes.
HOST_IMAGES = ("debian:12", "debian:bookworm")


def tes_section(center: CenterInfo) -> dict[str, Any]:
    images: list[dict[str, Any]] = [{"name": name} for name in HOST_IMAGES]
    return {"runtime": "none", "sandbox": "bubblewrap", "images": images}
