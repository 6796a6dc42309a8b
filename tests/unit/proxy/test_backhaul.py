"""A host proxy's backhaul record: registered on a lease, kept alive, registered again
when the lease is lost, survives the store being away, removed on stop; and the wire
helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.proxy.backhaul import Backhaul, parse_preamble, parse_target
from roost.proxy.server import Proxy, ProxyConfig, ProxyError
from roost.proxy.upstream import Pool
from roost.store import SqliteStore, StoreUnavailable
from roost.store.records import ProxyRecord, proxy_key


class FlakyLeases(SqliteStore):
    """A real store whose lease renewals can fail as if it were unreachable."""

    down = False
    refused: asyncio.Event

    async def keepalive(self, lease: int) -> None:
        if self.down:
            self.refused.set()
            raise StoreUnavailable("store unreachable (test)")
        await super().keepalive(lease)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FlakyLeases]:
    store = FlakyLeases(tmp_path / "s.db")
    store.refused = asyncio.Event()
    await store.start()
    yield store
    await store.close()


async def next_put(store: SqliteStore, key: str, revision: int) -> str:
    async for event in store.watch(key, revision + 1):
        if event.type == "put" and event.kv.key == key:
            return event.kv.value
    raise AssertionError("watch ended")


async def test_the_record_lives_on_a_lease(store: FlakyLeases) -> None:
    backhaul = Backhaul(store, "h1", "ams", Pool(), keepalive_interval=0.01)
    await backhaul.load_secret()
    assert backhaul.secret and backhaul.admits(backhaul.secret)
    assert not backhaul.admits(b"nope") and not backhaul.admits(None)
    await backhaul.register("10.0.0.1:4281")
    try:
        kv = await store.get(proxy_key("h1"))
        assert kv is not None and kv.lease
        assert ProxyRecord.from_json(kv.value) == ProxyRecord("h1", "10.0.0.1:4281", "ams")

        # The lease is lost (expired while we were away): the record comes back.
        revision = (await store.range("/")).revision
        await store.revoke_lease(kv.lease)
        value = await asyncio.wait_for(next_put(store, proxy_key("h1"), revision), 5)
        assert ProxyRecord.from_json(value).address == "10.0.0.1:4281"

        # Renewals failing while the store is away do not end the keepalive.
        store.down = True
        await asyncio.wait_for(store.refused.wait(), 5)
        store.refused.clear()
        await asyncio.wait_for(store.refused.wait(), 5)
        store.down = False
        assert backhaul._task is not None and not backhaul._task.done()
    finally:
        await backhaul.stop()
    assert await store.get(proxy_key("h1")) is None


def test_wire_helpers() -> None:
    assert parse_target(b"0123456789abcd:8080") == ("0123456789abcd", 8080)
    for bad in (None, b"", b"abc", b"abc:", b":80", b"abc:eighty"):
        assert parse_target(bad) is None
    assert parse_preamble(b"ROOST-TCP s3cr3t m1 7000") == (b"s3cr3t", "m1", 7000)
    assert parse_preamble(b"ROOST-TCP s3cr3t m1") is None
    assert parse_preamble(b"ROOST-TCP s3cr3t m1 x") is None


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (ProxyConfig(host_id="h1"), "needs a backhaul address"),
        (ProxyConfig(host_id="h1", backhaul_listen="0.0.0.0:4281"), "backhaul_advertise"),
    ],
)
async def test_fleet_mode_needs_a_reachable_backhaul(
    store: SqliteStore, config: ProxyConfig, error: str
) -> None:
    with pytest.raises(ProxyError, match=error):
        Proxy(store, None, config)  # type: ignore[arg-type]
