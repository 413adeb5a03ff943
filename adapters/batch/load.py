"""What the load parsers of every batch scheduler share: a center's nodes summed, and
GPUs counted from Slurm's GRES notation (which Slurm's Torque wrapper prints too)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from adapters.base import CenterTotals, GpuLoad

#: "gpu:a100:4", "gpu:4", and "gpu:(null):1" (GresUsed of untyped GPUs bound to devices).
_GRES_RE = re.compile(r"^gpu(?::(\(null\)|[^:()]+))?:(\d+)([KMG]?)")
_GRES_SCALE = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class CountedNode(Protocol):
    """One node as a load parser read it."""

    @property
    def condition(self) -> str:  # "idle", "allocated" or "down"
        ...

    @property
    def cores(self) -> tuple[int, int, int, int]:  # allocated, idle, other (down), total
        ...

    @property
    def gpus(self) -> Mapping[str, int]:  # by model
        ...

    @property
    def gpus_used(self) -> Mapping[str, int]: ...


def sum_nodes(nodes: Sequence[CountedNode]) -> CenterTotals:
    """Nodes by condition, cores by (allocated, idle, other, total) and GPUs by model
    of some nodes; a node never counts more GPUs in use than it has."""
    conditions = [n.condition for n in nodes]
    models = sorted({m for n in nodes for m in n.gpus})
    return CenterTotals(
        nodes_total=len(nodes),
        nodes_idle=conditions.count("idle"),
        nodes_allocated=conditions.count("allocated"),
        nodes_down=conditions.count("down"),
        cores_total=sum(n.cores[3] for n in nodes),
        cores_idle=sum(n.cores[1] for n in nodes),
        cores_allocated=sum(n.cores[0] for n in nodes),
        cores_down=sum(n.cores[2] for n in nodes),
        gpus=tuple(
            GpuLoad(
                model,
                total=sum(n.gpus.get(model, 0) for n in nodes),
                allocated=sum(min(n.gpus_used.get(model, 0), n.gpus.get(model, 0)) for n in nodes),
                per_node=max(n.gpus.get(model, 0) for n in nodes),
            )
            for model in models
        ),
    )


def split_gres(text: str) -> list[str]:
    """ "gpu:a100:2(S:0,1),gpu:v100:1" -> its entries; commas inside "(...)" stay."""
    entries, depth, current = [], 0, []
    for char in text:
        if char == "," and depth == 0:
            entries.append("".join(current))
            current = []
            continue
        depth += char == "("
        depth -= char == ")" and depth > 0
        current.append(char)
    entries.append("".join(current))
    return [e.strip() for e in entries if e.strip() and e.strip() != "(null)"]


def gpus_by_model(gres: str) -> dict[str, int]:
    """GPU counts by model from a GRES string; "gpu" for untyped GPUs. Other GRES
    (mps, shard, licenses) are not GPUs and are left out."""
    counts: dict[str, int] = {}
    for entry in split_gres(gres):
        match = _GRES_RE.match(entry)
        if match is None:
            continue
        kind, number, scale = match.groups()
        model = kind if kind and kind != "(null)" else "gpu"
        counts[model] = counts.get(model, 0) + int(number) * _GRES_SCALE[scale]
    return counts
