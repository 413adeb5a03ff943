"""What the load parsers of every batch scheduler share: a center's nodes summed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from adapters.base import CenterTotals, GpuLoad


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
