"""Waiting out an operation in progress.

Clients send operations back to back (update then start, create a volume then extend
it), and Fly answers the second as if the first had finished. An operation that finds
its object in the middle of an earlier one watches the object's key for its next
change and then looks again, up to a deadline.
"""

from __future__ import annotations

import asyncio

from roost.store import Store
from roost.store.records import alive_key

BUSY_WAIT = 60.0
"""How long an operation waits behind one its object is in the middle of."""


def deadline() -> float:
    return asyncio.get_running_loop().time() + BUSY_WAIT


async def next_change(
    store: Store, key: str, after_revision: int, until: float, *, host_id: str
) -> bool:
    """True once ``key`` changes after ``after_revision``; False at ``until``, or at once
    when ``host_id``, whose agent would make the change, is lost."""
    if await store.get(alive_key(host_id)) is None:
        return False
    try:
        async with asyncio.timeout_at(until):
            async for event in store.watch(key, after_revision + 1):
                if event.kv.key == key:
                    return True
    except TimeoutError:
        pass
    return False
