"""Background work that outlives an outage of the store.

A loop that asks the store now and then (looking for abandoned evaluations, for
unfinished transfers whose replica died) keeps going while the store is out of
reach (`every`): the outage is one warning, and one line when the store answers
again, not a traceback each round. The final write of a piece of work done under a
lease is tried again while the store is out of reach (`save_final`). `stop` ends a
background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.store.contract import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from gateway.store.leases import Held

#: Seconds between two tries of a final write the store did not take.
RETRY = 1.0
#: The defaults of the work each replica takes up by lease (transfers, evaluations):
#: seconds a lease lasts without renewal (renewed every third of it), seconds between
#: two looks for work whose lease is free, and how long the final write of a piece of
#: work is tried again while the store is out of reach.
LEASE_TTL = 15.0
SWEEP_EVERY = 5.0
FINAL_SAVE_FOR = 60.0


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if there is one) and wait for it to end."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def every(
    seconds: float, work: Callable[[], Awaitable[object]], what: str, log: logging.Logger
) -> None:
    """`work()` every `seconds` (the first after `seconds`) until cancelled. `what`
    names it in the log, e.g. "transfers: looking for unfinished ones"."""
    failing = False
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except StoreError as exc:
            if not failing:
                log.warning("%s: not now, the store does not answer: %s", what, exc)
            failing = True
        except Exception:
            log.exception("%s failed", what)
        else:
            if failing:
                log.info("%s: the store answers again", what)
            failing = False


async def save_final(
    save: Callable[[], Awaitable[object]],
    held: Held,
    what: str,
    log: logging.Logger,
    *,
    until: float,
    closing: Callable[[], bool],
) -> bool:
    """`save()` while `held` holds, tried again every `RETRY` seconds while the store
    is out of reach, until `until` (monotonic; once when `closing()`). A write that
    fails is logged as "<what> could not be stored". False if the lease was lost first."""
    while held.holding:
        try:
            await save()
            return True
        except StoreUnavailable as exc:
            if closing() or time.monotonic() >= until:
                log.error("%s could not be stored: %s", what, exc)
                return True
            await asyncio.sleep(RETRY)
        except Exception:
            log.exception("%s could not be stored", what)
            return True
    return False
