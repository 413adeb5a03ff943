"""Prometheus metrics of one gateway, served at GET /metrics.

Each app has a `CollectorRegistry` of its own (never the process-wide default
one: tests run many gateways in one process). Counters and histograms are fed
where things happen: an HTTP middleware, the SSH pool's command observer, the
poller's poll hook, transfer and file byte counts. The pool's connections and
the jobs by state are read at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.base import JobState
from adapters.transport.ssh import SSHPool

if TYPE_CHECKING:
    from gateway.centers.configured import CenterRegistry
    from gateway.data.transfers import TransferService
    from gateway.jobs.poller import Poller

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: SSH commands take milliseconds on a quiet center, seconds on a busy one.
_SSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _PoolCollector(Collector):
    def __init__(self, pools: Callable[[], Iterable[SSHPool]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "hpcfed_ssh_pool_connections",
            "Pooled SSH connections to a center whose transport is open",
            labels=["center"],
        )
        counts: dict[str, int] = {}
        for pool in self._pools():
            for center, n in pool.open_connections().items():
                counts[center] = counts.get(center, 0) + n
        for center, n in sorted(counts.items()):
            family.add_metric([center], n)
        yield family


class _JobsCollector(Collector):
    """The jobs by center and state, as last read from the store (before each scrape)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.centers: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "hpcfed_jobs", "The gateway's jobs by center and state", labels=["center", "state"]
        )
        # Every state of every center, zeros included, so a state emptied reads 0.
        centers = self.centers | {c for c, _ in self.counts}
        for center in sorted(centers):
            for state in JobState:
                family.add_metric([center, state.value], self.counts.get((center, state.value), 0))
        yield family


class GatewayMetrics:
    """The metric families of one gateway."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "hpcfed_http_requests",
            "HTTP requests answered, by route name, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "hpcfed_http_request_duration_seconds",
            "Time to answer an HTTP request (to the handler's return)",
            ["route", "method"],
            registry=r,
        )
        self.ssh_commands = Counter(
            "hpcfed_ssh_commands",
            "Commands run over SSH: ok (exit 0), failed (non-zero exit), unavailable (no answer)",
            ["center", "outcome"],
            registry=r,
        )
        self.ssh_duration = Histogram(
            "hpcfed_ssh_command_duration_seconds",
            "Time of one SSH command, connecting included",
            ["center"],
            buckets=_SSH_BUCKETS,
            registry=r,
        )
        self.poll_duration = Histogram(
            "hpcfed_poll_duration_seconds",
            "Time of one batched status poll of a center (one login's jobs)",
            ["center"],
            buckets=_POLL_BUCKETS,
            registry=r,
        )
        self.jobs_unaccounted = Counter(
            "hpcfed_jobs_unaccounted",
            "Jobs shown as UNKNOWN (UNACCOUNTED) because their center stopped listing them "
            "and nothing there confirmed their end",
            ["center"],
            registry=r,
        )
        self.transfer_bytes = Counter(
            "hpcfed_transfer_bytes",
            "Bytes moved through the gateway: copied (center to center), upload, download",
            ["direction"],
            registry=r,
        )
        #: Label values -> child metric, so a request skips the labels() lookup.
        self._http_durations: dict[tuple[str, str], Histogram] = {}
        self._http_counts: dict[tuple[str, str, int], Counter] = {}
        self.jobs = _JobsCollector()
        r.register(self.jobs)
        self._pools: list[SSHPool] = []
        r.register(_PoolCollector(lambda: self._pools))

    # ------------------------------------------------------------ hooks
    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        durations, counts = self._http_durations, self._http_counts
        duration = durations.get((route, method))
        if duration is None:
            if len(durations) >= _HTTP_CHILDREN:  # methods come from clients: keep it bounded
                durations.clear()
            duration = durations[route, method] = self.http_duration.labels(route, method)
        duration.observe(seconds)
        count = counts.get((route, method, status))
        if count is None:
            if len(counts) >= _HTTP_CHILDREN:
                counts.clear()
            count = counts[route, method, status] = self.http_requests.labels(
                route, method, str(status)
            )
        count.inc()

    def observe_ssh(self, center: str, seconds: float, outcome: str) -> None:
        self.ssh_commands.labels(center, outcome).inc()
        self.ssh_duration.labels(center).observe(seconds)

    def observe_poll(self, center: str, seconds: float) -> None:
        self.poll_duration.labels(center).observe(seconds)

    def count_bytes(self, direction: str, n: int) -> None:
        if n > 0:
            self.transfer_bytes.labels(direction).inc(n)

    def watch_pool(self, pool: SSHPool) -> None:
        """Count `pool`'s commands and report its connections."""
        pool.observe = self.observe_ssh
        self._pools.append(pool)

    def watch(self, centers: CenterRegistry, poller: Poller, transfers: TransferService) -> None:
        """Hook into the parts of a started gateway."""
        if centers.ssh_pool is not None:
            self.watch_pool(centers.ssh_pool)
        poller.observe_poll = self.observe_poll
        poller.observe_unaccounted = lambda center: self.jobs_unaccounted.labels(center).inc()
        transfers.on_bytes = self.count_bytes

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", GatewayMetrics)
#: At most this many label combinations of the HTTP metrics are looked up from a dict.
_HTTP_CHILDREN = 1024


def metrics_middleware(metrics: GatewayMetrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "unmatched"
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.observe_http(route, request.method, status, time.monotonic() - started)

    return middleware
