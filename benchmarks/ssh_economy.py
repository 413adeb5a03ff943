"""Benchmark 5, SSH economy: did a gateway ever hold more connections to a center's
sshd than its pool accounts for?

Nothing is run here. While each benchmark's gateway runs, `Context.gateway` samples
(every 50 ms, `harness.ConnectionWatch`) the established TCP connections the gateway
process and its descendants hold to each center's sshd port, and keeps the most seen:
`ctx.connections[(label, center)]`. Before the gateway stops, it reads the gateway's
own `hpcfed_ssh_pool_connections` (pooled connections whose transport is open) into
`ctx.pool_sizes`. `figures(ctx)` turns both into one row per center.
"""

from __future__ import annotations

from benchmarks.harness import Context, Figure

BENCH = "5 SSH economy"


def _pool_size(ctx: Context, label: str, center: str) -> int:
    """The pooled connections gateway `label` reported for `center`; 1 (one login) when
    it reported none, since the pool keeps one connection per (center, login)."""
    return max(ctx.pool_sizes.get((label, center), 0), 1)


def figures(ctx: Context, owners: dict[str, str] | None = None) -> list[Figure]:
    """One row per center: the peak over all watched gateways against the pool size.

    `owners` maps a gateway label to the benchmark that started it, for the note.
    A center is judged met when every gateway's peak is at most its own pool size;
    a center no gateway connected to is reported, not judged.
    """
    owners = owners or {}
    labels = sorted({label for label, _ in ctx.connections})
    if not labels:
        return [
            Figure(
                bench=BENCH,
                name="connections to sshd",
                value=float("nan"),
                unit="",
                note="no gateway was watched (no benchmark ran a gateway)",
            )
        ]
    watched = ", ".join(
        f"{label} ({owners[label]})" if label in owners else label for label in labels
    )
    rows = []
    for center in sorted({c for _, c in ctx.connections}):
        peaks = {label: n for (label, c), n in ctx.connections.items() if c == center}
        peak = max(peaks.values())
        pools = {label: _pool_size(ctx, label, center) for label in peaks}
        reported = any(ctx.pool_sizes.get((label, center), 0) for label in peaks)
        each = ", ".join(f"{label} {peaks[label]}/{pools[label]}" for label in sorted(peaks))
        if peak == 0:
            met, note = None, f"no gateway connected to it; gateways watched: {watched}"
        else:
            met = all(peaks[label] <= pools[label] for label in peaks)
            note = (
                f"peak/pool per gateway: {each}"
                + ("" if reported else " (no pool metric reported: 1 login assumed)")
                + f"; gateways watched: {watched}"
            )
        rows.append(
            Figure(
                bench=BENCH,
                name=f"{center}: most TCP connections to sshd",
                value=float(peak),
                unit="conn",
                baseline=float(max(pools.values())),
                baseline_name="pool size",
                target="<= pool size",
                met=met,
                note=note,
            )
        )
    return rows
