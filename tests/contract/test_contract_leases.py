"""The Leases contract (gateway/store/leases.py), over every implementation
(tests/contract/conftest.py). Two stores made at one place are two replicas of one
database; the in-memory leases serve one process, whose leases are all its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.store.leases import Leases
from tests.contract.conftest import Backend

#: Long enough that no lease of a test expires unless the test waits for it.
TTL = 30.0
#: Short enough to wait for; long enough that it does not expire between two calls.
SHORT = 1.0


async def _expired(leases: Leases, name: str, deadline: float = 10.0) -> None:
    """Wait until `name` is no longer among the holders (its ttl ran out)."""
    end = time.monotonic() + deadline
    while name in await leases.holders(name):
        assert time.monotonic() < end, f"{name} never expired"
        await asyncio.sleep(0.05)


@pytest.fixture
async def two(shared_lease_backend: Backend) -> AsyncIterator[tuple[Leases, Leases]]:
    """Two replicas' leases on one database."""
    first, second = shared_lease_backend.make(), shared_lease_backend.make()
    await first.open()
    await second.open()
    yield first, second
    await second.close()
    await first.close()


@pytest.fixture
async def leases(lease_backend: Backend) -> AsyncIterator[Leases]:
    store = lease_backend.make()
    await store.open()
    yield store
    await store.close()


async def test_a_free_lease_is_taken_and_renewed_with_its_fence(leases: Leases) -> None:
    await leases.ping()
    before = time.time()
    lease = await leases.acquire("center/centera", TTL)
    assert lease is not None
    assert (lease.name, lease.holder) == ("center/centera", leases.holder)
    assert before + TTL - 5 <= lease.expires_at <= time.time() + TTL + 5
    renewed = await leases.acquire("center/centera", TTL)
    assert renewed is not None and renewed.fence == lease.fence
    assert renewed.expires_at >= lease.expires_at
    other = await leases.acquire("center/centerb", TTL)
    assert other is not None and other.fence != lease.fence


async def test_only_one_of_two_holders_gets_a_lease(two: tuple[Leases, Leases]) -> None:
    first, second = two
    assert first.holder != second.holder
    got = await asyncio.gather(*(s.acquire("center/centera", TTL) for s in (first, second)))
    held = [lease for lease in got if lease is not None]
    assert len(held) == 1
    owner = first if got[0] is not None else second
    other = second if owner is first else first
    assert held[0].holder == owner.holder
    assert await other.acquire("center/centera", TTL) is None  # still the owner's
    again = await owner.acquire("center/centera", TTL)
    assert again is not None and again.fence == held[0].fence


async def test_an_expired_lease_goes_to_another_with_a_bigger_fence(
    two: tuple[Leases, Leases],
) -> None:
    first, second = two
    lease = await first.acquire("send/job-1", SHORT)
    assert lease is not None
    assert await second.acquire("send/job-1", TTL) is None
    await _expired(second, "send/job-1")
    taken = await second.acquire("send/job-1", TTL)
    assert taken is not None
    assert taken.holder == second.holder and taken.fence > lease.fence
    assert await first.acquire("send/job-1", TTL) is None  # the first lost it
    # A release with the old fence is no release of the new holder's lease.
    await first.release(lease)
    assert (await second.holders("send/"))["send/job-1"].fence == taken.fence


async def test_a_released_lease_is_free_at_once(two: tuple[Leases, Leases]) -> None:
    first, second = two
    lease = await first.acquire("stageout/job-2", TTL)
    assert lease is not None
    await first.release(lease)
    assert "stageout/job-2" not in await second.holders("stageout/")
    taken = await second.acquire("stageout/job-2", TTL)
    assert taken is not None and taken.fence > lease.fence


async def test_a_lease_taken_again_after_it_expired_has_a_new_fence(leases: Leases) -> None:
    lease = await leases.acquire("center/centerc", SHORT)
    assert lease is not None
    await _expired(leases, "center/centerc")
    again = await leases.acquire("center/centerc", TTL)
    assert again is not None and again.fence > lease.fence
    await leases.release(again)
    assert "center/centerc" not in await leases.holders("center/")
    third = await leases.acquire("center/centerc", TTL)
    assert third is not None and third.fence > again.fence


async def test_holders_list_the_unexpired_leases_of_a_prefix(leases: Leases) -> None:
    assert await leases.holders("center/") == {}
    a = await leases.acquire("center/centera", TTL)
    b = await leases.acquire("center/centerb", TTL)
    await leases.acquire("send/job-3", TTL)
    await leases.acquire("center/short", SHORT)
    await _expired(leases, "center/short")
    assert a is not None and b is not None
    held = await leases.holders("center/")
    assert {n: (x.holder, x.fence) for n, x in held.items()} == {
        "center/centera": (a.holder, a.fence),
        "center/centerb": (b.holder, b.fence),
    }
    assert set(await leases.holders("send/")) == {"send/job-3"}
    # A prefix is a prefix, not a pattern.
    assert await leases.holders("center_") == {}
    assert await leases.holders("%") == {}


async def test_holders_are_seen_by_every_replica(two: tuple[Leases, Leases]) -> None:
    first, second = two
    lease = await first.acquire("center/centera", TTL)
    assert lease is not None
    seen = await second.holders("center/")
    assert set(seen) == {"center/centera"}
    assert (seen["center/centera"].holder, seen["center/centera"].fence) == (
        first.holder,
        lease.fence,
    )


async def test_many_leases_are_taken_renewed_and_released_together(leases: Leases) -> None:
    names = [f"send/job-{i}" for i in range(50)]
    taken = await leases.acquire_many(names, TTL)
    assert sorted(taken) == sorted(names)
    assert len({lease.fence for lease in taken.values()}) == len(names)
    renewed = await leases.acquire_many(names, TTL)
    assert {n: lease.fence for n, lease in renewed.items()} == {
        n: lease.fence for n, lease in taken.items()
    }
    await leases.release_many([taken[n] for n in names[:20]])
    held = await leases.holders("send/")
    assert sorted(held) == sorted(names[20:])
    assert await leases.acquire_many([], TTL) == {}


async def test_of_many_leases_a_second_holder_gets_only_the_free_ones(
    two: tuple[Leases, Leases],
) -> None:
    first, second = two
    mine = await first.acquire_many(["send/a", "send/b"], TTL)
    assert sorted(mine) == ["send/a", "send/b"]
    theirs = await second.acquire_many(["send/b", "send/c"], TTL)
    assert sorted(theirs) == ["send/c"]
    await second.release_many(list(mine.values()))  # not its own: nothing released
    assert sorted(await first.holders("send/")) == ["send/a", "send/b", "send/c"]
    await first.release_many(list(mine.values()))
    assert sorted(await second.holders("send/")) == ["send/c"]
