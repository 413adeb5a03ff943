"""Request limits: the token-bucket rate limiter on a fake clock, and the rate and
body-size middlewares in a real aiohttp app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.limits import (
    MemoryBudget,
    RateLimiter,
    body_limit_middleware,
    rate_limit_middleware,
)

Client = TestClient[web.Request, web.Application]


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ---------------------------------------------------------------- RateLimiter


def test_burst_is_granted_then_refused_with_the_time_to_the_next_token(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)

    assert [limiter.acquire("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("alice") == pytest.approx(0.5)  # one token per 0.5 s
    clock.advance(0.2)
    assert limiter.acquire("alice") == pytest.approx(0.3)  # a refusal takes nothing


def test_tokens_refill_over_time_up_to_the_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    limiter.acquire("alice")
    limiter.acquire("alice")
    assert limiter.acquire("alice") == pytest.approx(1.0)

    clock.advance(1.0)  # exactly as long as it was told
    assert limiter.acquire("alice") == 0.0
    assert limiter.acquire("alice") > 0

    clock.advance(3600)  # a long rest refills the burst, no more
    assert [limiter.acquire("alice") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("alice") == pytest.approx(1.0)


def test_sustained_rate_is_honoured_at_fractional_rates(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=3.0, burst=1, clock=clock)
    granted = 0
    for _ in range(300):  # 10 s in steps of 1/30 s
        if limiter.acquire("alice") == 0.0:
            granted += 1
        clock.advance(1 / 30)
    assert granted in (30, 31)  # 3/s for 10 s, plus the initial burst


def test_keys_are_independent(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.acquire("alice") == 0.0
    assert limiter.acquire("alice") > 0
    assert limiter.acquire("bob") == 0.0


def test_eviction_drops_full_buckets_first(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock, max_keys=3)
    limiter.acquire("busy1")
    limiter.acquire("busy1")  # drained; the least recently used
    limiter.acquire("idle")  # one token left
    clock.advance(1.0)  # "idle" is full again, "busy1" has one token
    limiter.acquire("busy2")
    limiter.acquire("busy2")

    limiter.acquire("new")  # a fourth key: one must go, and "idle" carries no state

    assert len(limiter) == 3
    # "busy1" was kept although least recently used: it has one token, not a fresh burst.
    assert limiter.acquire("busy1") == 0.0
    assert limiter.acquire("busy1") > 0
    assert limiter.acquire("busy2") > 0


def test_eviction_falls_back_to_least_recently_used(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock, max_keys=2)
    limiter.acquire("a")
    limiter.acquire("b")
    limiter.acquire("a")  # refused, but "a" is now the most recently used

    limiter.acquire("c")  # nothing is full: "b" goes

    assert len(limiter) == 2
    assert limiter.acquire("a") > 0  # kept, still drained
    assert limiter.acquire("c") > 0  # kept, drained by its first request


def test_memory_stays_bounded_under_a_flood_of_keys(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=0.001, burst=5, clock=clock, max_keys=1000)
    for i in range(20_000):
        assert limiter.acquire(f"user{i}") == 0.0  # a new key always gets its burst
        assert len(limiter) <= 1000


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0, "burst": 1}, {"rate": 1, "burst": 0}, {"rate": 1, "burst": 1, "max_keys": 0}],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the middlewares


async def _ok(request: web.Request) -> web.Response:
    # Reading the body shows a request that passes is handled in full.
    return web.json_response({"read": len(await request.read())})


@contextlib.asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def rate_client(clock: FakeClock) -> AsyncIterator[Client]:
    # Keys come from a header here; in the gateway the key function names the
    # authenticated user.
    limiter = RateLimiter(rate=0.4, burst=2, clock=clock)
    app = web.Application(
        middlewares=[
            rate_limit_middleware(
                limiter, lambda request: request.headers.get("X-User"), exempt={"/health"}
            )
        ]
    )
    app.router.add_post("/v1/jobs", _ok)
    app.router.add_get("/health", _ok)
    async with _serve(app) as client:
        yield client


async def test_burst_beyond_limit_gets_429_with_retry_after(rate_client: Client) -> None:
    alice = {"X-User": "alice"}
    for _ in range(2):
        assert (await rate_client.post("/v1/jobs", headers=alice)).status == 200

    response = await rate_client.post("/v1/jobs", headers=alice)

    assert response.status == 429
    assert response.headers["Retry-After"] == "3"  # 2.5 s rounded up
    assert await response.json() == {
        "error": {
            "code": "rate_limited",
            "message": "too many requests; retry after 3 s",
            "retry_after": 3,
        }
    }


async def test_requests_pass_again_after_the_wait(rate_client: Client, clock: FakeClock) -> None:
    alice = {"X-User": "alice"}
    for _ in range(3):
        await rate_client.post("/v1/jobs", headers=alice)
    clock.advance(2.5)
    assert (await rate_client.post("/v1/jobs", headers=alice)).status == 200


async def test_a_short_wait_is_announced_as_at_least_one_second(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=100.0, burst=1, clock=clock)
    app = web.Application(middlewares=[rate_limit_middleware(limiter, lambda request: "k")])
    app.router.add_post("/", _ok)
    async with _serve(app) as client:
        await client.post("/")
        response = await client.post("/")
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"  # not "0": that would mean "now"


async def test_another_key_is_unaffected(rate_client: Client) -> None:
    for _ in range(3):
        await rate_client.post("/v1/jobs", headers={"X-User": "alice"})
    assert (await rate_client.post("/v1/jobs", headers={"X-User": "bob"})).status == 200


async def test_exempt_path_and_requests_without_a_key_pass(rate_client: Client) -> None:
    alice = {"X-User": "alice"}
    for _ in range(3):
        await rate_client.post("/v1/jobs", headers=alice)
    assert (await rate_client.post("/v1/jobs", headers=alice)).status == 429
    for _ in range(5):
        assert (await rate_client.get("/health", headers=alice)).status == 200
        assert (await rate_client.post("/v1/jobs")).status == 200  # no key: not limited


@pytest.fixture
async def body_client() -> AsyncIterator[Client]:
    app = web.Application(
        middlewares=[body_limit_middleware(1024, exempt={"/v1/jobs/{id}/files"})],
        # Above the middleware's limit, so that it is the middleware that answers.
        client_max_size=1 << 20,
    )
    app.router.add_post("/v1/jobs", _ok)
    app.router.add_put("/v1/jobs/{id}/files", _ok)
    async with _serve(app) as client:
        yield client


async def test_body_over_the_limit_gets_413_naming_the_body(body_client: Client) -> None:
    response = await body_client.post("/v1/jobs", data=b"x" * 1025)

    assert response.status == 413
    assert await response.json() == {
        "error": {
            "code": "body_too_large",
            "message": "body: larger than the 1 KiB limit",
            "field": "body",
            "limit": 1024,
        }
    }


async def test_body_at_the_limit_passes(body_client: Client) -> None:
    response = await body_client.post("/v1/jobs", data=b"x" * 1024)
    assert response.status == 200
    assert await response.json() == {"read": 1024}


async def test_exempt_route_may_receive_a_larger_body(body_client: Client) -> None:
    # Exempt by route pattern, as streamed uploads will be.
    response = await body_client.put("/v1/jobs/j-1/files", data=b"x" * 4096)
    assert response.status == 200
    assert await response.json() == {"read": 4096}


async def test_the_connection_still_serves_after_a_refused_body(body_client: Client) -> None:
    assert (await body_client.post("/v1/jobs", data=b"x" * 50_000)).status == 413
    assert (await body_client.post("/v1/jobs", data=b"x")).status == 200


async def test_memory_budget_makes_requests_past_it_wait_their_turn() -> None:
    budget = MemoryBudget(10)
    first = await budget.reserve(6)
    second = asyncio.create_task(budget.reserve(6))
    done, _ = await asyncio.wait({second}, timeout=0.2)
    assert not done and budget.reserved == 6  # it waits while the first holds its part
    await budget.release(first)
    assert await asyncio.wait_for(second, 5) == 6
    # One request larger than the whole budget runs alone, holding all of it.
    await budget.release(6)
    assert await budget.reserve(100) == 10 and budget.reserved == 10
