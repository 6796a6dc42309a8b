"""Bounded waits on watch streams, shared by the store tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

from roost.store import Store, WatchEvent

TIMEOUT = 5.0


async def next_event(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await anext(events)


async def take(events: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    async def collect() -> list[WatchEvent]:
        return [await anext(events) for _ in range(n)]

    return await asyncio.wait_for(collect(), TIMEOUT)


async def stop(events: AsyncIterator[WatchEvent]) -> None:
    """``aclose()`` a watch: the contract promises it though ``AsyncIterator`` lacks it."""
    await cast(AsyncGenerator[WatchEvent, None], events).aclose()


async def replay(store: Store, prefix: str, from_revision: int, n: int) -> list[WatchEvent]:
    """The first ``n`` events of a watch, which is then closed."""
    events = store.watch(prefix, from_revision)
    try:
        return await take(events, n)
    finally:
        await stop(events)
