"""One leader among many: whoever creates the election key leads while its lease lives.

The key is put only if absent, on a TTL lease the leader keeps renewing; the others
watch it and try again when it goes. A leader that cannot renew (the store away, or the
lease already expired) steps down at once and stops its work before anyone else can
have taken over, because the lease outlives the last renewal by a full TTL.

    follower ──key absent, created──▶ leader ──renewal fails──▶ follower
        ▲                                │
        └────────key exists: watch───────┘ (on delete: try again)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from roost.store import Compacted, Compare, Put, Store, StoreError

log = logging.getLogger("roost.controller")

LEASE_TTL = 5.0
RETRY_DELAY = 1.0


class Election:
    def __init__(self, store: Store, key: str, holder: str, *, ttl: float = LEASE_TTL) -> None:
        self._store = store
        self._key = key
        self._holder = holder
        self._ttl = ttl
        self.leading = asyncio.Event()

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Forever: win leadership, run ``lead()`` while leading, cancel it on losing."""
        while True:
            try:
                lease = await self._store.grant_lease(self._ttl)
                won = await self._store.txn(
                    [Compare.absent(self._key)], [Put(self._key, self._holder, lease=lease)]
                )
                if won.succeeded:
                    await self._lead(lease, lead)
                else:
                    await self._store.revoke_lease(lease)
                    await self._wait_vacant()
            except StoreError:
                log.warning("election: store unavailable; trying again")
                await asyncio.sleep(RETRY_DELAY)
            except Exception:
                # The leader's work failed: step down (done) and stand again.
                log.exception("%s: leading failed", self._holder)
                await asyncio.sleep(RETRY_DELAY)

    async def _lead(self, lease: int, lead: Callable[[], Awaitable[None]]) -> None:
        log.info("%s now leads (%s)", self._holder, self._key)
        self.leading.set()
        work = asyncio.ensure_future(lead())
        try:
            while not work.done():
                await asyncio.wait([work], timeout=self._ttl / 3)
                if not work.done():
                    await self._store.keepalive(lease)
            work.result()
        finally:
            self.leading.clear()
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            with contextlib.suppress(StoreError):
                await self._store.revoke_lease(lease)
            log.info("%s no longer leads", self._holder)

    async def _wait_vacant(self) -> None:
        """Until the key is gone (its holder stepped down or its lease expired)."""
        while True:
            current = await self._store.get(self._key)
            if current is None:
                return
            try:
                async for event in self._store.watch(self._key, current.mod_revision + 1):
                    if event.type == "delete" and event.kv.key == self._key:
                        return
            except Compacted:
                continue
