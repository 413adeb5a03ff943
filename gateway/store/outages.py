"""Background work that outlives an outage of the store.

A loop that asks the store now and then (looking for abandoned evaluations, for
unfinished transfers whose replica died) keeps going while the store is out of
reach: the outage is one warning, and one line when the store answers again, not a
traceback each round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.store.contract import StoreError


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
