"""SQLite-only behaviour: persistence, fake-clock expiry, compaction, crash durability."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import roost
from roost.store import (
    KV,
    Compacted,
    LeaseNotFound,
    Put,
    SqliteStore,
    StoreError,
    StoreUnavailable,
)
from roost.store.sqlite import prefix_end
from tests.unit.store.helpers import TIMEOUT, next_event, replay, stop, take


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def faked(clock: FakeClock) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(":memory:", clock=clock, reaper=False)
    try:
        yield store
    finally:
        await store.close()


def test_prefix_end() -> None:
    assert prefix_end("/a/") == b"/a0"
    assert prefix_end("¿") == b"\xc2\xc0"
    assert prefix_end("") is None


async def test_state_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "store.db"
    store = await SqliteStore.open(path, clock=clock, reaper=False)
    await store.put("/a", "1")
    await store.put("/a", "2")
    lease = await store.grant_lease(30)
    revision = await store.put("/leased", "v", lease=lease)
    await store.close()

    clock.now += 10
    store = await SqliteStore.open(path, clock=clock, reaper=False)
    try:
        assert await store.get("/a") == KV("/a", "2", 1, 2, 2)
        assert await store.get("/leased") == KV("/leased", "v", 3, 3, 1, lease)
        assert (await store.range("")).revision == revision
        await store.keepalive(lease)
        assert await store.put("/b", "1") == revision + 1
        history = await replay(store, "/", 1, 4)
        assert [e.kv.mod_revision for e in history] == [1, 2, 3, 4]
    finally:
        await store.close()


async def test_reopen_reaps_leases_that_expired_while_closed(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "store.db"
    store = await SqliteStore.open(path, clock=clock, reaper=False)
    lease = await store.grant_lease(10)
    revision = await store.put("/alive/h1", "1", lease=lease)
    await store.close()

    clock.now += 10
    store = await SqliteStore.open(path, clock=clock, reaper=False)
    try:
        assert await store.get("/alive/h1") is None
        (event,) = await replay(store, "/alive/", revision + 1, 1)
        assert (event.type, event.kv.key) == ("delete", "/alive/h1")
        with pytest.raises(LeaseNotFound):
            await store.keepalive(lease)
    finally:
        await store.close()


async def test_expiry_follows_the_injected_clock(faked: SqliteStore, clock: FakeClock) -> None:
    short = await faked.grant_lease(10)
    long = await faked.grant_lease(100)
    await faked.put("/k/1", "v", lease=short)
    await faked.put("/k/2", "v", lease=short)
    await faked.put("/k/3", "v", lease=long)
    revision = (await faked.range("")).revision
    watch = faked.watch("/k/", revision + 1)

    clock.now += 9.9
    assert await faked.expire_leases() == 0
    await faked.keepalive(short)

    clock.now += 9.9
    assert await faked.expire_leases() == 0
    clock.now += 0.1
    # Expired but not yet reaped: already gone as far as callers can tell.
    with pytest.raises(LeaseNotFound):
        await faked.keepalive(short)
    with pytest.raises(LeaseNotFound):
        await faked.put("/k/4", "v", lease=short)

    assert await faked.expire_leases() == 1
    assert await faked.expire_leases() == 0
    events = await take(watch, 2)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        ("delete", "/k/1", revision + 1),
        ("delete", "/k/2", revision + 1),
    ]
    assert [kv.key for kv in (await faked.range("/k/")).kvs] == ["/k/3"]
    await stop(watch)


async def test_expiring_leases_without_keys_changes_no_revision(
    faked: SqliteStore, clock: FakeClock
) -> None:
    await faked.grant_lease(1)
    await faked.grant_lease(2)
    revision = await faked.put("/k", "v")
    clock.now += 5
    assert await faked.expire_leases() == 2
    assert (await faked.range("")).revision == revision


async def test_grant_rejects_non_positive_ttl(faked: SqliteStore) -> None:
    with pytest.raises(ValueError):
        await faked.grant_lease(0)


async def test_history_is_compacted_past_retention() -> None:
    store = await SqliteStore.open(":memory:", history_retention=10)
    try:
        for i in range(30):
            await store.put("/c", str(i))
        with pytest.raises(Compacted) as raised:
            await anext(store.watch("/c", 1))
        assert 10 <= raised.value.compact_revision <= 20
        events = await replay(store, "/c", 21, 10)
        assert [e.kv.value for e in events] == [str(i) for i in range(20, 30)]
    finally:
        await store.close()


async def test_compact_keeps_later_history(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        for i in range(5):
            await store.put("/c", str(i))
        with pytest.raises(ValueError):
            await store.compact(6)
        await store.compact(3)
        await store.compact(2)
        with pytest.raises(Compacted) as raised:
            await anext(store.watch("/", 3))
        assert raised.value.compact_revision == 3
        assert [e.kv.value for e in await replay(store, "/", 4, 2)] == ["3", "4"]
    finally:
        await store.close()
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        with pytest.raises(Compacted):
            await anext(store.watch("/", 3))
    finally:
        await store.close()


async def test_lagging_watcher_catches_up_from_history() -> None:
    store = await SqliteStore.open(":memory:")
    try:
        watch = store.watch("/lag/", 1)
        await store.put("/lag/k", "0")
        await take(watch, 1)
        # More revisions than the in-memory tail holds, while the watcher is not reading.
        for i in range(1, 1200):
            await store.put("/lag/k" if i % 2 else "/other", str(i))
        events = await take(watch, 600)
        assert [e.kv.mod_revision for e in events] == list(range(2, 1201, 2))
        assert [e.prev.value if e.prev else None for e in events[:2]] == ["0", "1"]
        await stop(watch)
    finally:
        await store.close()


async def test_watchers_are_released(faked: SqliteStore) -> None:
    revision = (await faked.range("")).revision
    quiet = [faked.watch(f"/quiet/{i}/", revision + 1) for i in range(200)]
    waiting = [asyncio.create_task(next_event(w)) for w in quiet]
    loud = faked.watch("/loud/", revision + 1)
    for i in range(20):
        await faked.put(f"/noise/{i}", "x")
    await faked.put("/loud/1", "x")
    (event,) = await take(loud, 1)
    assert event.kv.mod_revision == revision + 21
    assert faked.active_watchers == 201
    assert not any(task.done() for task in waiting)

    await faked.put("/quiet/7/k", "x")
    assert (await asyncio.wait_for(waiting[7], TIMEOUT)).kv.key == "/quiet/7/k"
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    # Cancelled ones are gone; the two suspended at a yield stay until closed.
    assert faked.active_watchers == 2
    await stop(quiet[7])
    await stop(loud)
    assert faked.active_watchers == 0


async def test_close_is_idempotent_and_ends_watchers(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    watch = store.watch("/", 1)
    pending = asyncio.create_task(next_event(watch))
    await store.put("/a", "1")
    await asyncio.wait_for(pending, TIMEOUT)
    pending = asyncio.create_task(next_event(watch))
    await asyncio.sleep(0)
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(pending, TIMEOUT)
    with pytest.raises(StoreUnavailable):
        await store.get("/a")
    with pytest.raises(StoreUnavailable):
        await store.put("/a", "2")
    assert store.active_watchers == 0


async def test_uses_wal(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    await store.put("/a", "1")
    try:
        with sqlite3.connect(tmp_path / "store.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await store.close()


async def test_refuses_unknown_schema(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "store.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        await SqliteStore.open(tmp_path / "store.db")


WRITER = """
import asyncio, sys
from roost.store import SqliteStore

async def main() -> None:
    store = await SqliteStore.open(sys.argv[1])
    lease = await store.grant_lease(3600)
    for i in range(20):
        await store.put(f"/durable/{i}", str(i), lease=lease if i == 19 else 0)
    print(lease, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_committed_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    env = {**os.environ, "PYTHONPATH": str(Path(roost.__file__).parents[1])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    lease = int(line)

    store = await SqliteStore.open(path)
    try:
        result = await store.range("/durable/")
        assert result.revision == 20
        assert [kv.value for kv in result.kvs] == sorted(str(i) for i in range(20))
        last = await store.get("/durable/19")
        assert last is not None
        assert last.lease == lease
        await store.keepalive(lease)
    finally:
        await store.close()


async def test_quiet_watcher_outlives_compaction_of_unrelated_history() -> None:
    store = await SqliteStore.open(":memory:", history_retention=10)
    try:
        watch = store.watch("/quiet/", 1)
        pending = asyncio.create_task(next_event(watch))
        for i in range(100):
            await store.put("/noise", str(i))
        revision = await store.put("/quiet/k", "v")
        event = await asyncio.wait_for(pending, TIMEOUT)
        assert (event.kv.key, event.kv.mod_revision) == ("/quiet/k", revision)
        await stop(watch)
    finally:
        await store.close()


async def test_follow_sees_commits_of_another_process(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    writer = await SqliteStore.open(path)
    reader = await SqliteStore.open(path, reaper=False, follow=True)
    try:
        start = (await reader.range("/")).revision + 1
        await writer.put("/a/1", "one")
        await writer.txn([], [Put("/a/2", "two"), Put("/b/1", "x")])
        await writer.delete("/a/1")
        events = []
        async with asyncio.timeout(5):
            async for event in reader.watch("/a/", start):
                events.append((event.type, event.kv.key, event.kv.value))
                if len(events) == 3:
                    break
        assert events == [("put", "/a/1", "one"), ("put", "/a/2", "two"), ("delete", "/a/1", "")]
        # Its own writes still work, and the other process sees them too.
        await reader.put("/c/1", "from the reader")
        assert (await writer.get("/c/1")).value == "from the reader"  # type: ignore[union-attr]
    finally:
        await reader.close()
        await writer.close()
