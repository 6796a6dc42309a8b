"""The Store contract, run against every backend in ``conftest.BACKENDS``.

Revisions are asserted relative to the store's revision at the start of a test, so a
backend that does not start from zero passes too.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Awaitable, Callable

import pytest

from roost.store import (
    KV,
    Compacted,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    LeaseNotFound,
    Put,
    Store,
    WatchEvent,
)
from tests.unit.store.helpers import TIMEOUT, next_event, stop, take


async def revision_of(store: Store) -> int:
    return (await store.range("")).revision


def summary(events: list[WatchEvent]) -> list[tuple[str, str, str, int]]:
    return [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in events]


# get / put / range / delete


async def test_put_get_revisions_and_versions(store: Store) -> None:
    r = await revision_of(store)
    assert await store.get("/k") is None

    assert await store.put("/k", "v1") == r + 1
    assert await store.get("/k") == KV("/k", "v1", r + 1, r + 1, 1)

    assert await store.put("/k", "v1") == r + 2, "an unchanged value still bumps"
    assert await store.get("/k") == KV("/k", "v1", r + 1, r + 2, 2)

    assert await store.put("/other", "x") == r + 3
    assert await store.delete("/k") == r + 4
    assert await store.get("/k") is None

    assert await store.put("/k", "v2") == r + 5
    assert await store.get("/k") == KV("/k", "v2", r + 5, r + 5, 1), "recreated from scratch"
    assert await revision_of(store) == r + 5


async def test_delete_of_missing_key_changes_nothing(store: Store) -> None:
    r = await store.put("/k", "v")
    assert await store.delete("/missing") == r
    assert await store.delete("/missing/", prefix=True) == r
    assert await revision_of(store) == r


async def test_put_rejects_empty_key(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.put("", "v")


async def test_range_order_and_prefix_boundaries(store: Store) -> None:
    for key in ["/a/2", "/ab", "/a/1", "/a", "/a/", "/a/1/x", "/b/1", "/a0"]:
        await store.put(key, key.upper())
    result = await store.range("/a/")
    assert [kv.key for kv in result.kvs] == ["/a/", "/a/1", "/a/1/x", "/a/2"]
    assert [kv.value for kv in result.kvs] == ["/A/", "/A/1", "/A/1/X", "/A/2"]
    assert result.revision == await revision_of(store)

    assert [kv.key for kv in (await store.range("/a")).kvs] == [
        "/a",
        "/a/",
        "/a/1",
        "/a/1/x",
        "/a/2",
        "/a0",
        "/ab",
    ]
    assert len((await store.range("")).kvs) == 8
    assert (await store.range("/c/")).kvs == []


async def test_range_is_bytewise_utf8(store: Store) -> None:
    # 'Z' < 'a' < 'é' (C3 A9) < '😀' (F0 9F 98 80) in UTF-8 byte order.
    keys = ["/u/😀", "/u/é", "/u/a", "/u/Z"]
    for key in keys:
        await store.put(key, "v")
    assert [kv.key for kv in (await store.range("/u/")).kvs] == sorted(
        keys, key=lambda k: k.encode()
    )


async def test_prefix_end_may_not_be_valid_utf8(store: Store) -> None:
    # '¿' is C2 BF; the end of its prefix range is C2 C0, which is not UTF-8.
    for key in ["¾", "¿", "¿x", "¿😀", "À"]:
        await store.put(key, "v")
    assert [kv.key for kv in (await store.range("¿")).kvs] == ["¿", "¿x", "¿😀"]


async def test_range_limit(store: Store) -> None:
    for i in range(5):
        await store.put(f"/l/{i}", str(i))
    assert [kv.key for kv in (await store.range("/l/", limit=2)).kvs] == ["/l/0", "/l/1"]
    assert len((await store.range("/l/", limit=0)).kvs) == 5
    assert len((await store.range("/l/", limit=10)).kvs) == 5


async def test_delete_prefix_is_one_revision_and_respects_boundaries(store: Store) -> None:
    for key in ["/a/1", "/a/2", "/a/3/x", "/ab", "/a"]:
        await store.put(key, "v")
    r = await revision_of(store)
    watch = store.watch("/", r + 1)
    assert await store.delete("/a/", prefix=True) == r + 1
    assert [kv.key for kv in (await store.range("/")).kvs] == ["/a", "/ab"]
    events = await take(watch, 3)
    assert summary(events) == [
        ("delete", "/a/1", "", r + 1),
        ("delete", "/a/2", "", r + 1),
        ("delete", "/a/3/x", "", r + 1),
    ]
    await stop(watch)


# txn

INT_TARGETS: list[CompareTarget] = ["mod_revision", "create_revision", "version"]
OPS: list[CompareOp] = ["==", "!=", "<", ">"]
PY_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt}


@pytest.mark.parametrize("op", OPS)
async def test_txn_compares_every_target_and_op(store: Store, op: CompareOp) -> None:
    await store.put("/c", "v1")
    await store.put("/c", "v2")
    kv = await store.get("/c")
    assert kv is not None
    cases: list[tuple[CompareTarget, int | str]] = []
    for target in INT_TARGETS:
        actual = getattr(kv, target)
        cases += [(target, actual - 1), (target, actual), (target, actual + 1)]
    cases += [("value", "v1"), ("value", "v2"), ("value", "v3")]

    for target, operand in cases:
        expected = PY_OPS[op](getattr(kv, target), operand)
        before = await revision_of(store)
        result = await store.txn(
            [Compare("/c", target, op, operand)],
            success=[Put("/result", "success")],
            failure=[Put("/result", "failure")],
        )
        assert result.succeeded is expected, (target, op, operand)
        assert result.revision == before + 1
        got = await store.get("/result")
        assert got is not None
        assert got.value == ("success" if expected else "failure")
        assert got.mod_revision == result.revision


async def test_txn_compares_on_missing_key(store: Store) -> None:
    async def holds(compare: Compare) -> bool:
        return (await store.txn([compare])).succeeded

    assert await holds(Compare.absent("/nope"))
    assert await holds(Compare("/nope", "version", "==", 0))
    assert await holds(Compare("/nope", "mod_revision", "<", 1))
    assert await holds(Compare.unchanged(None, "/nope"))
    # As etcd: a missing key has no value, so every value comparison fails.
    assert not await holds(Compare("/nope", "value", "==", ""))
    assert not await holds(Compare("/nope", "value", "!=", "x"))


async def test_txn_all_compares_must_hold(store: Store) -> None:
    r = await store.put("/x", "1")
    await store.put("/y", "2")
    ok = [Compare("/x", "value", "==", "1"), Compare("/y", "value", "==", "2")]
    bad = [Compare("/x", "value", "==", "1"), Compare("/y", "mod_revision", "==", r)]
    assert (await store.txn(ok)).succeeded
    assert not (await store.txn(bad)).succeeded


async def test_txn_applies_one_branch_in_one_revision(store: Store) -> None:
    await store.put("/t/old", "x")
    r = await revision_of(store)
    watch = store.watch("/t/", r + 1)

    result = await store.txn(
        [Compare.absent("/t/new")],
        success=[Put("/t/new", "n"), Put("/t/b", "b"), Delete("/t/old")],
        failure=[Put("/t/failed", "f")],
    )
    assert result.succeeded
    assert result.revision == r + 1
    assert await store.get("/t/failed") is None
    assert summary(await take(watch, 3)) == [
        ("put", "/t/b", "b", r + 1),
        ("put", "/t/new", "n", r + 1),
        ("delete", "/t/old", "", r + 1),
    ]

    result = await store.txn(
        [Compare.absent("/t/new")],
        success=[Put("/t/again", "a")],
        failure=[Put("/t/failed", "f"), Delete("/t/", prefix=False)],
    )
    assert not result.succeeded
    assert result.revision == r + 2
    assert await store.get("/t/again") is None
    assert summary(await take(watch, 1)) == [("put", "/t/failed", "f", r + 2)]
    await stop(watch)


async def test_txn_without_changes_keeps_revision(store: Store) -> None:
    r = await store.put("/k", "v")
    failed = await store.txn([Compare("/k", "value", "==", "other")], success=[Put("/k", "w")])
    assert failed == type(failed)(succeeded=False, revision=r)
    empty = await store.txn([Compare("/k", "value", "==", "v")])
    assert empty.succeeded
    assert empty.revision == r
    assert await revision_of(store) == r


async def test_txn_rejects_a_key_written_twice(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.txn([], success=[Put("/k", "1"), Put("/k", "2")])
    with pytest.raises(ValueError):
        await store.txn([], success=[Put("/d/k", "1"), Delete("/d/", prefix=True)])
    assert await store.get("/k") is None


async def test_concurrent_cas_has_one_winner_per_round(store: Store) -> None:
    writers, rounds = 8, 5
    await store.put("/counter", "0")
    for round_no in range(1, rounds + 1):
        seen = await asyncio.gather(*(store.get("/counter") for _ in range(writers)))
        results = await asyncio.gather(
            *(
                store.txn(
                    [Compare.unchanged(kv, "/counter")],
                    success=[Put("/counter", str(round_no)), Put(f"/winner/{round_no}", str(w))],
                )
                for w, kv in enumerate(seen)
            )
        )
        assert sum(r.succeeded for r in results) == 1
        assert len({r.revision for r in results}) == 1
    counter = await store.get("/counter")
    assert counter is not None
    assert counter.value == str(rounds)
    assert counter.version == rounds + 1
    assert len((await store.range("/winner/")).kvs) == rounds


# watch


async def test_watch_replays_then_streams_with_prev(store: Store) -> None:
    r = await revision_of(store)
    await store.put("/w/a", "1")
    await store.put("/w/a", "2")
    await store.put("/w/b", "1")
    watch = store.watch("/w/", r + 1)

    replayed = await take(watch, 3)
    assert summary(replayed) == [
        ("put", "/w/a", "1", r + 1),
        ("put", "/w/a", "2", r + 2),
        ("put", "/w/b", "1", r + 3),
    ]
    assert replayed[0].prev is None
    assert replayed[1].prev == KV("/w/a", "1", r + 1, r + 1, 1)
    assert replayed[1].kv == KV("/w/a", "2", r + 1, r + 2, 2)

    await store.put("/w/a", "3")
    (streamed,) = await take(watch, 1)
    assert streamed.kv == KV("/w/a", "3", r + 1, r + 4, 3)
    assert streamed.prev == KV("/w/a", "2", r + 1, r + 2, 2)
    await stop(watch)


async def test_watch_from_the_middle_of_history(store: Store) -> None:
    r = await revision_of(store)
    for i in range(5):
        await store.put("/m", str(i))
    watch = store.watch("/m", r + 3)
    assert [e.kv.value for e in await take(watch, 3)] == ["2", "3", "4"]
    await stop(watch)


async def test_watch_sees_deletes_with_prev(store: Store) -> None:
    r = await store.put("/d/k", "v", lease=0)
    watch = store.watch("/d/", r + 1)
    deleted = await store.delete("/d/k")
    (event,) = await take(watch, 1)
    assert event.type == "delete"
    assert event.kv.key == "/d/k"
    assert event.kv.value == ""
    assert event.kv.mod_revision == deleted
    assert event.prev == KV("/d/k", "v", r, r, 1)
    await stop(watch)


async def test_watch_sees_only_its_prefix(store: Store) -> None:
    r = await revision_of(store)
    watch = store.watch("/a/", r + 1)
    await store.put("/ab", "no")
    await store.put("/b/1", "no")
    await store.put("/a", "no")
    await store.put("/a/1", "yes")
    await store.txn([], success=[Put("/a/2", "yes"), Put("/ac", "no")])
    assert summary(await take(watch, 2)) == [
        ("put", "/a/1", "yes", r + 4),
        ("put", "/a/2", "yes", r + 5),
    ]
    await stop(watch)


async def test_watch_from_future_revision_waits(store: Store) -> None:
    r = await revision_of(store)
    watch = store.watch("/f", r + 3)
    first = asyncio.create_task(next_event(watch))
    await store.put("/f", "1")
    await store.put("/f", "2")
    assert not first.done()
    await store.put("/f", "3")
    event = await asyncio.wait_for(first, TIMEOUT)
    assert (event.kv.value, event.kv.mod_revision) == ("3", r + 3)
    await stop(watch)


async def test_many_watchers_each_see_every_event_in_order(store: Store) -> None:
    r = await revision_of(store)
    watches = [store.watch("/many/", r + 1) for _ in range(50)]
    consumers = [asyncio.create_task(take(w, 20)) for w in watches]
    for i in range(20):
        await store.put(f"/many/{i % 3}", str(i))
    for consumer in consumers:
        events = await consumer
        assert [e.kv.mod_revision for e in events] == list(range(r + 1, r + 21))
        assert [e.kv.value for e in events] == [str(i) for i in range(20)]
    for watch in watches:
        await stop(watch)


async def test_watch_can_be_closed_or_cancelled(store: Store) -> None:
    r = await revision_of(store)
    closed = store.watch("/", r + 1)
    waiting = asyncio.create_task(next_event(closed))
    await store.put("/x", "1")
    await asyncio.wait_for(waiting, TIMEOUT)
    await stop(closed)

    cancelled = store.watch("/", r + 10)
    task = asyncio.create_task(next_event(cancelled))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stop(cancelled)

    assert await store.put("/x", "2") == r + 2


async def test_watch_of_compacted_revision_raises(
    store: Store, compact: Callable[[int], Awaitable[None]]
) -> None:
    r = await revision_of(store)
    for i in range(5):
        await store.put("/c", str(i))
    await compact(r + 3)

    with pytest.raises(Compacted) as raised:
        await anext(store.watch("/c", r + 2))
    # Whether the compaction revision itself stays watchable differs (etcd: yes).
    assert raised.value.compact_revision >= r + 3
    with pytest.raises(Compacted):
        await anext(store.watch("/c", r + 1))

    watch = store.watch("/c", r + 4)
    assert [e.kv.value for e in await take(watch, 2)] == ["3", "4"]
    await stop(watch)


# leases


async def test_lease_expiry_deletes_keys_with_events(store: Store) -> None:
    lease = await store.grant_lease(1)
    await store.put("/alive/h1", "1", lease=lease)
    await store.put("/alive/h2", "1", lease=lease)
    await store.put("/alive/other", "stays")
    r = await revision_of(store)
    watch = store.watch("/alive/", r + 1)

    events = await take(watch, 2)
    assert [(e.type, e.kv.key) for e in events] == [
        ("delete", "/alive/h1"),
        ("delete", "/alive/h2"),
    ]
    assert events[0].prev is not None
    assert events[0].prev.lease == lease
    assert [kv.key for kv in (await store.range("/alive/")).kvs] == ["/alive/other"]
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease)
    with pytest.raises(LeaseNotFound):
        await store.put("/alive/h1", "again", lease=lease)
    await stop(watch)


async def test_keepalive_keeps_keys(store: Store) -> None:
    lease = await store.grant_lease(1)
    await store.put("/ka", "v", lease=lease)
    for _ in range(3):
        # Time has to pass for the TTL to matter; nothing signals "not expired".
        await asyncio.sleep(0.4)
        await store.keepalive(lease)
    kv = await store.get("/ka")
    assert kv is not None
    assert kv.lease == lease
    await store.revoke_lease(lease)


async def test_revoke_deletes_keys_in_one_revision(store: Store) -> None:
    lease = await store.grant_lease(60)
    other = await store.grant_lease(60)
    await store.put("/r/1", "v", lease=lease)
    await store.put("/r/2", "v", lease=lease)
    await store.put("/r/3", "v", lease=other)
    r = await revision_of(store)
    watch = store.watch("/r/", r + 1)

    await store.revoke_lease(lease)
    assert summary(await take(watch, 2)) == [
        ("delete", "/r/1", "", r + 1),
        ("delete", "/r/2", "", r + 1),
    ]
    assert [kv.key for kv in (await store.range("/r/")).kvs] == ["/r/3"]
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease)
    await store.revoke_lease(lease)
    await store.keepalive(other)
    await stop(watch)


async def test_put_moves_a_key_between_leases(store: Store) -> None:
    lease = await store.grant_lease(60)
    await store.put("/mv", "v", lease=lease)
    await store.put("/mv", "v")
    await store.revoke_lease(lease)
    kv = await store.get("/mv")
    assert kv is not None
    assert kv.lease == 0


async def test_lease_not_found(store: Store) -> None:
    with pytest.raises(LeaseNotFound):
        await store.put("/k", "v", lease=12345)
    with pytest.raises(LeaseNotFound):
        await store.keepalive(12345)
    await store.revoke_lease(12345)

    r = await revision_of(store)
    with pytest.raises(LeaseNotFound):
        await store.txn([], success=[Put("/k1", "v"), Put("/k2", "v", lease=12345)])
    assert await store.get("/k1") is None
    assert await revision_of(store) == r


async def test_lease_ids_are_distinct_and_positive(store: Store) -> None:
    leases = [await store.grant_lease(60) for _ in range(20)]
    assert len(set(leases)) == 20
    assert all(0 < lease < 2**63 for lease in leases)
    for lease in leases:
        await store.revoke_lease(lease)
