"""Request limits: a per-user rate limit and a cap on request bodies.

Both answer with a domain error in the API's one error shape (its status from the
table of ``gateway.http.errors``): ``rate_limited`` (429) with ``Retry-After``, and
``body_too_large`` (413).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.errors import DomainError
from gateway.http.errors import domain_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

#: Float rounding must not refuse a request that waited exactly as long as told.
_EPSILON: Final = 1e-9


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float  # clock time ``tokens`` was computed at


class RateLimiter:
    """Token buckets, one per key: ``burst`` at once, ``rate`` per second sustained.

    Not thread-safe; it is meant for the event loop, where calls never overlap.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate: must be > 0, not {rate}")
        if burst < 1:
            raise ValueError(f"burst: must be >= 1, not {burst}")
        if max_keys < 1:
            raise ValueError(f"max_keys: must be >= 1, not {max_keys}")
        self.rate = float(rate)
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        # Least recently used first: eviction pops from the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        """How many buckets are held (for tests and metrics)."""
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """0.0 if ``key`` may proceed now (a token is taken), else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
        else:
            bucket.tokens = self._level(bucket, now)
            bucket.stamp = now
            self._buckets.move_to_end(key)
        if bucket.tokens >= 1.0 - _EPSILON:
            bucket.tokens = max(bucket.tokens - 1.0, 0.0)
            wait = 0.0
        else:
            wait = (1.0 - bucket.tokens) / self.rate
        if len(self._buckets) > self.max_keys:
            self._evict(now)
        return wait

    def _level(self, bucket: _Bucket, now: float) -> float:
        # max(): a clock that steps back must not take tokens away.
        elapsed = max(now - bucket.stamp, 0.0)
        return min(float(self.burst), bucket.tokens + elapsed * self.rate)

    def _evict(self, now: float) -> None:
        # A full bucket is what a new key would get anyway: dropping it loses nothing.
        for key in [k for k, b in self._buckets.items() if self._level(b, now) >= self.burst]:
            del self._buckets[key]
        if len(self._buckets) <= self.max_keys:
            return
        # Still too many: forget the least recently used (they get a fresh burst if
        # they return). Go a tenth below the cap so that a flood of new keys does
        # not pay for the full scan above on every request.
        keep = self.max_keys - self.max_keys // 10
        while len(self._buckets) > keep:
            self._buckets.popitem(last=False)


def rate_limit_middleware(
    limiter: RateLimiter,
    key: Callable[[web.Request], str | None],
    exempt: Collection[str] = (),
) -> Middleware:
    """Refuse requests beyond ``limiter``'s rate for their key with 429.

    Meant to sit after authentication, so that ``key`` can name the user; a
    request it gives no key for (e.g. unauthenticated) passes. ``exempt`` holds
    paths or route patterns (``/v1/jobs/{id}``) that are never limited.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_exempt(request, exempt):
            return await handler(request)
        name = key(request)
        if name is None:
            return await handler(request)
        wait = limiter.acquire(name)
        if wait <= 0:
            return await handler(request)
        # Whole seconds (Retry-After has no fractions), never 0: "retry now" would
        # only earn another refusal.
        seconds = max(1, math.ceil(wait))
        response = domain_response(
            DomainError(
                "rate_limited", f"too many requests; retry after {seconds} s", retry_after=seconds
            )
        )
        response.headers["Retry-After"] = str(seconds)
        return response

    return middleware


def body_limit_middleware(max_bytes: int, exempt: Collection[str] = ()) -> Middleware:
    """Refuse a request whose Content-Length exceeds ``max_bytes`` with 413.

    The check is on the declared length, before anything reads the body. A
    chunked body declares none; aiohttp's own ``client_max_size`` still stops it
    when a handler reads it. ``exempt`` (paths or route patterns) is for
    handlers that stream large bodies themselves, such as uploads.
    """
    human = _human_size(max_bytes)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is None or length <= max_bytes or _is_exempt(request, exempt):
            return await handler(request)
        # The unread body is drained (for a while) and the connection then closed
        # by aiohttp itself, so the client still gets to read this answer.
        return domain_response(
            DomainError(
                "body_too_large", f"body: larger than the {human} limit", "body", limit=max_bytes
            )
        )

    return middleware


class MemoryBudget:
    """Bytes of request bodies (and list pages) being handled at once, process-wide.

    A request reserves its declared body length (a list, its page bound) before its
    handler runs and gives it back when the answer is made; past the budget it waits
    its turn. Each reserved byte stands for a few in memory (the body, its parse, the
    record, the answer), so the budget bounds the process's memory however many
    large requests arrive together. One request larger than the whole budget runs
    alone."""

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"budget: must be >= 1, not {budget}")
        self.budget = budget
        self.reserved = 0
        self._changed = asyncio.Condition()

    async def reserve(self, size: int) -> int:
        size = min(size, self.budget)
        async with self._changed:
            await self._changed.wait_for(lambda: self.reserved + size <= self.budget)
            self.reserved += size
        return size

    async def release(self, size: int) -> None:
        async with self._changed:
            self.reserved -= size
            self._changed.notify_all()


def memory_budget_middleware(
    budget: MemoryBudget, exempt: Collection[str], page_bytes: int, paged: Collection[str]
) -> Middleware:
    """Hold each large request's bytes in `budget` while it is handled: bodies by
    their Content-Length (streamed uploads exempt), GETs of `paged` routes by the
    page bound."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        size = request.content_length or 0
        if _is_exempt(request, exempt):
            size = 0
        elif request.method == "GET" and _is_exempt(request, paged):
            size = page_bytes
        if size < _SMALL:
            return await handler(request)
        held = await budget.reserve(size)
        try:
            return await handler(request)
        finally:
            await budget.release(held)

    return middleware


#: Requests smaller than this are not counted: they cannot add up to much.
_SMALL: Final = 64 << 10


def _is_exempt(request: web.Request, exempt: Collection[str]) -> bool:
    if not exempt:
        return False
    if request.path in exempt:
        return True
    # Routes are resolved before middlewares run, so the pattern is known here.
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in exempt


def _human_size(size: int) -> str:
    """``4 MiB``, ``512 KiB``, ``1.5 GiB``, ``100 bytes``: exact, never rounded."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        # The largest unit that states the size exactly with at most one decimal.
        if size >= factor and (size * 10) % factor == 0:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"
