"""etcd-specific behaviour of EtcdStore: failover, restarts, compaction, leases.

The Store contract itself runs against etcd in ``test_contract.py``; these tests run
their own etcd servers (on tmpfs, fast election timings) because they kill, restart
and compact them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from roost.store import Compacted, EtcdStore, LeaseNotFound, Put, StoreUnavailable, WatchEvent
from roost.store.etcd_server import (
    ETCD_BINARY,
    LocalEtcd,
    LocalEtcdCluster,
    free_port,
    tmpfs_dir,
)
from tests.unit.store.helpers import TIMEOUT, next_event, stop, take

pytestmark = pytest.mark.skipif(
    not os.access(ETCD_BINARY, os.X_OK), reason=f"needs {ETCD_BINARY} (package etcd-server)"
)


@pytest.fixture
def root() -> Iterator[Path]:
    path = tmpfs_dir("roost-etcd-test-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def etcd(root: Path) -> AsyncIterator[LocalEtcd]:
    server = LocalEtcd(root / "data", client_port=free_port(), peer_port=free_port())
    try:
        await server.start()
        yield server
    finally:
        await server.kill()


@pytest.fixture
async def cluster(root: Path) -> AsyncIterator[LocalEtcdCluster]:
    members = LocalEtcdCluster(root)
    try:
        await members.start()
        yield members
    finally:
        await members.kill()


@pytest.fixture
async def etcd_store(etcd: LocalEtcd) -> AsyncIterator[EtcdStore]:
    opened = EtcdStore([etcd.url])
    try:
        yield opened
    finally:
        await opened.close()


def values(events: list[WatchEvent]) -> list[tuple[str, int]]:
    return [(e.kv.value, e.kv.mod_revision) for e in events]


async def watchers(url: str) -> int:
    """etcd's count of open watches, from its Prometheus metrics."""
    async with httpx.AsyncClient(trust_env=False) as http:
        text = (await http.get(f"{url}/metrics")).text
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watcher_total "):
            return int(float(line.split()[1]))
    raise AssertionError("etcd_debugging_mvcc_watcher_total missing from /metrics")


async def wait_for_watchers(url: str, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while (seen := await watchers(url)) != count:
        assert time.monotonic() < deadline, f"{seen} watchers, expected {count}"
        await asyncio.sleep(0.02)


# Failover


async def test_failover_when_the_member_in_use_is_killed(cluster: LocalEtcdCluster) -> None:
    leader = await cluster.leader()
    first, spare = [m for m in cluster.members if m is not leader]
    # A follower first: its death needs no election, so failover is immediate.
    store = EtcdStore([first.url, leader.url, spare.url])
    try:
        r = await store.put("/f/k", "1")
        watch = store.watch("/f/", r)
        assert values(await take(watch, 1)) == [("1", r)]

        await first.kill()
        started = time.monotonic()
        assert await store.put("/f/k", "2") == r + 1
        assert time.monotonic() - started < 1.0
        assert store.endpoint != first.url
        kv = await store.get("/f/k")
        assert kv is not None
        assert kv.value == "2"
        # The watch was on the killed member too: it resumed elsewhere, nothing lost.
        assert values(await take(watch, 1)) == [("2", r + 1)]
        await stop(watch)
    finally:
        await store.close()


async def test_failover_when_the_leader_is_killed(cluster: LocalEtcdCluster) -> None:
    leader = await cluster.leader()
    endpoints = [leader.url, *(m.url for m in cluster.members if m is not leader)]
    store = EtcdStore(endpoints, timeout=1.0)
    try:
        r = await store.put("/l/k", "0")
        watch = store.watch("/l/", r)
        assert values(await take(watch, 1)) == [("0", r)]
        await leader.kill()
        # A write reaching a follower that still believes in the dead leader is
        # forwarded there and lost; it times out and, as for all the client knows it
        # may have been applied, raises StoreUnavailable. Later writes go through.
        # How many writes fall into the election depends on the machine's load: keep
        # writing (bounded) until two have gone through.
        written: list[int] = []
        for i in range(1, 20):
            with contextlib.suppress(StoreUnavailable):
                written.append(await store.put("/l/k", str(i)))
            if len(written) >= 2:
                break
        assert len(written) >= 2
        # The watch, on the dead leader too, resumed elsewhere and misses no write.
        seen: list[int] = []
        while not seen or seen[-1] < written[-1]:
            seen += [e.kv.mod_revision for e in await take(watch, 1)]
        assert set(written) <= set(seen)
        assert seen == sorted(set(seen))
        await stop(watch)
    finally:
        await store.close()


async def test_no_quorum_is_unavailable(cluster: LocalEtcdCluster) -> None:
    survivor, *doomed = cluster.members
    store = EtcdStore(cluster.endpoints, timeout=1.0)
    try:
        await store.put("/q", "1")
        for member in doomed:
            await member.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.put("/q", "2")
        with pytest.raises(StoreUnavailable):
            await store.get("/q")
        # Each call: at most one attempt's timeout plus the rounds until its deadline.
        assert time.monotonic() - started < 5.0
        assert survivor.running
    finally:
        await store.close()


async def test_nothing_listening_is_unavailable() -> None:
    store = EtcdStore([f"http://127.0.0.1:{free_port()}"], timeout=0.3, reconnect_timeout=0.3)
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("/k")
        with pytest.raises(StoreUnavailable):
            await store.put("/k", "v")
        with pytest.raises(StoreUnavailable):
            await anext(store.watch("/", 1))
    finally:
        await store.close()


# Watches across restarts


async def test_watch_resumes_across_a_restart_without_loss(
    etcd: LocalEtcd, etcd_store: EtcdStore
) -> None:
    r = await etcd_store.put("/w/a", "1")
    watch = etcd_store.watch("/w/", r)
    assert values(await take(watch, 1)) == [("1", r)]

    # Crash etcd while the watch waits for its next event.
    waiting = asyncio.create_task(next_event(watch))
    await asyncio.sleep(0.05)
    await etcd.kill()
    await etcd.start()
    # Written while the watch may still be reconnecting: replayed from history.
    assert await etcd_store.put("/w/b", "2") == r + 1
    assert await etcd_store.put("/w/a", "3") == r + 2
    event = await asyncio.wait_for(waiting, TIMEOUT)
    assert (event.kv.key, event.kv.value, event.kv.mod_revision) == ("/w/b", "2", r + 1)
    (event,) = await take(watch, 1)
    assert (event.kv.value, event.kv.mod_revision) == ("3", r + 2)
    assert event.prev is not None
    assert event.prev.value == "1"

    # A clean restart while nobody reads the watch: resumed on the next read.
    await etcd.restart()
    assert await etcd_store.put("/w/c", "4") == r + 3
    assert values(await take(watch, 1)) == [("4", r + 3)]
    await stop(watch)


async def test_watch_gives_up_when_etcd_stays_down(etcd: LocalEtcd) -> None:
    store = EtcdStore([etcd.url], reconnect_timeout=0.5)
    try:
        r = await store.put("/g", "1")
        watch = store.watch("/g", r)
        await take(watch, 1)
        await etcd.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(next_event(watch), TIMEOUT)
        assert time.monotonic() - started < 2.0
    finally:
        await store.close()


async def test_resumed_watch_raises_compacted_when_history_is_gone(
    etcd: LocalEtcd, etcd_store: EtcdStore
) -> None:
    r = await etcd_store.put("/c/k", "1")
    watch = etcd_store.watch("/c/", r)
    await take(watch, 1)
    # Nobody reads the watch while etcd restarts and the history it needs goes away.
    await etcd.restart()
    await etcd_store.put("/c/k", "2")
    latest = await etcd_store.put("/c/k", "3")
    await etcd_store.compact(latest)
    with pytest.raises(Compacted) as raised:
        await anext(watch)
    assert raised.value.compact_revision == latest


async def test_progress_notifications_keep_a_quiet_watch_resumable(root: Path) -> None:
    # Progress every 100 ms; the watch's own endpoint dies while the others compact.
    progress = "--experimental-watch-progress-notify-interval=100ms"
    async with LocalEtcdCluster(root, extra_args=[progress]) as cluster:
        leader = await cluster.leader()
        # A follower: killing the leader could stall the writes below for an election.
        watched = next(m for m in cluster.members if m is not leader)
        store = EtcdStore([watched.url])
        writer = EtcdStore([m.url for m in cluster.members if m is not watched])
        try:
            r = await store.put("/p/k", "1")
            watch = store.watch("/p/", r)
            await take(watch, 1)
            waiting = asyncio.create_task(next_event(watch))
            for i in range(5):
                await writer.put("/elsewhere", str(i))
            # No event says a progress notification arrived: give it a few intervals.
            await asyncio.sleep(0.5)
            await watched.kill()
            latest = await writer.put("/elsewhere", "last")
            await writer.compact(latest)
            await watched.start()
            await writer.put("/p/k", "2")
            # Resumed after the compaction, from past the revisions it had no events in.
            event = await asyncio.wait_for(waiting, TIMEOUT)
            assert event.kv.value == "2"
            await stop(watch)
        finally:
            await store.close()
            await writer.close()


async def test_closing_a_watch_ends_its_stream(etcd: LocalEtcd, etcd_store: EtcdStore) -> None:
    r = await etcd_store.put("/s", "1")
    closed = [etcd_store.watch("/s", r) for _ in range(3)]
    for watch in closed:
        await take(watch, 1)
    cancelled = etcd_store.watch("/s", r + 1)
    task = asyncio.create_task(next_event(cancelled))
    await wait_for_watchers(etcd.url, 4)

    for watch in closed:
        await stop(watch)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for_watchers(etcd.url, 0)


async def test_close_ends_running_watches(etcd: LocalEtcd) -> None:
    store = EtcdStore([etcd.url])
    r = await store.put("/x", "1")
    watch = store.watch("/x", r + 1)
    waiting = asyncio.create_task(next_event(watch))
    await wait_for_watchers(etcd.url, 1)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(waiting, TIMEOUT)
    with pytest.raises(StoreUnavailable):
        await store.get("/x")


# Compaction and leases


async def test_compaction_through_the_gateway(etcd: LocalEtcd, etcd_store: EtcdStore) -> None:
    r = await etcd_store.put("/k", "0")
    for i in range(1, 5):
        await etcd_store.put("/k", str(i))
    async with httpx.AsyncClient(base_url=etcd.url, trust_env=False) as http:
        response = await http.post("/v3/kv/compaction", json={"revision": str(r + 2)})
        response.raise_for_status()

    with pytest.raises(Compacted) as raised:
        await anext(etcd_store.watch("/k", r + 1))
    assert raised.value.compact_revision == r + 2
    # As in etcd, the compaction revision itself stays watchable.
    watch = etcd_store.watch("/k", r + 2)
    assert values(await take(watch, 3)) == [("2", r + 2), ("3", r + 3), ("4", r + 4)]
    await stop(watch)

    await etcd_store.compact(r + 1)  # older than the last compaction: nothing to do
    with pytest.raises(ValueError):
        await etcd_store.compact(r + 100)


async def test_put_with_an_expired_lease(etcd_store: EtcdStore) -> None:
    lease = await etcd_store.grant_lease(1)
    r = await etcd_store.put("/lease/k", "v", lease=lease)
    watch = etcd_store.watch("/lease/", r + 1)
    (expired,) = await take(watch, 1)
    assert expired.type == "delete"
    with pytest.raises(LeaseNotFound):
        await etcd_store.put("/lease/k", "again", lease=lease)
    with pytest.raises(LeaseNotFound):
        await etcd_store.keepalive(lease)
    await etcd_store.revoke_lease(lease)
    await stop(watch)


async def test_short_ttls_are_raised_to_etcds_minimum(
    etcd: LocalEtcd, etcd_store: EtcdStore
) -> None:
    lease = await etcd_store.grant_lease(0.2)
    async with httpx.AsyncClient(base_url=etcd.url, trust_env=False) as http:
        response = await http.post("/v3/lease/timetolive", json={"ID": str(lease)})
    # 1.5 election timeouts of 500 ms, rounded up to whole seconds.
    assert int(response.json()["grantedTTL"]) == 1
    await etcd_store.revoke_lease(lease)


async def test_etcd_rejections_are_value_errors(etcd_store: EtcdStore) -> None:
    with pytest.raises(ValueError):
        await etcd_store.get("")
    with pytest.raises(ValueError):
        # More operations than etcd's --max-txn-ops (128).
        await etcd_store.txn([], success=[Put(f"/many/{i}", "v") for i in range(200)])
