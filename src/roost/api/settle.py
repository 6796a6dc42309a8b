"""Waiting out an operation in progress.

Clients send operations back to back (update then start, create a volume then extend
it), and Fly answers the second as if the first had finished. An operation that finds
its object in the middle of an earlier one watches the object's key for its next
change and then looks again, up to a deadline.
"""

from __future__ import annotations

import asyncio

from roost.store import Store

BUSY_WAIT = 60.0
"""How long an operation waits behind one its object is in the middle of."""


def deadline() -> float:
    return asyncio.get_running_loop().time() + BUSY_WAIT


async def next_change(store: Store, key: str, after_revision: int, until: float) -> bool:
    """True once ``key`` changes after ``after_revision``; False at ``until``."""
    try:
        async with asyncio.timeout_at(until):
            async for event in store.watch(key, after_revision + 1):
                if event.kv.key == key:
                    return True
    except TimeoutError:
        pass
    return False
