"""The catalog places machines on hosts: local, remote through a host's proxy, or
unreachable while their host is down; and it keeps its view while the store is away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from roost.proxy import catalog as catalog_module
from roost.proxy.catalog import Catalog, Machine
from roost.store import (
    Compare,
    Delete,
    Put,
    RangeResult,
    SqliteStore,
    Store,
    StoreUnavailable,
    TxnResult,
    WatchEvent,
)
from roost.store.base import KV
from roost.store.records import (
    App,
    HostRecord,
    MachineRecord,
    MachineStatus,
    ProxyRecord,
    alive_key,
    app_key,
    host_key,
    machine_key,
    proxy_key,
    status_key,
)


class FlakyStore(Store):
    """A real store that can be made unreachable: reads and watches then fail."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.down = False
        self.failed_read = asyncio.Event()

    def _check(self) -> None:
        if self.down:
            self.failed_read.set()
            raise StoreUnavailable("store unreachable (test)")

    async def get(self, key: str) -> KV | None:
        self._check()
        return await self.inner.get(key)

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        self._check()
        return await self.inner.range(prefix, limit=limit)

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        return await self.inner.put(key, value, lease=lease)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        return await self.inner.delete(key, prefix=prefix)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Put | Delete] = (),
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        return await self.inner.txn(compare, success, failure)

    async def watch(self, prefix: str, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        self._check()
        async for event in self.inner.watch(prefix, from_revision):
            # The connection drops: the next change is never delivered.
            self._check()
            yield event

    async def grant_lease(self, ttl: float) -> int:
        return await self.inner.grant_lease(ttl)

    async def keepalive(self, lease: int) -> None:
        await self.inner.keepalive(lease)

    async def revoke_lease(self, lease: int) -> None:
        await self.inner.revoke_lease(lease)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Fleet:
    store: SqliteStore
    catalog: Catalog

    async def host(self, host: str, *, alive: bool = True, proxy: str | None = None) -> None:
        await self.store.put(host_key(host), HostRecord(id=host, region="ams").to_json())
        if alive:
            await self.store.put(alive_key(host), "1")
        if proxy is not None:
            await self.store.put(proxy_key(host), ProxyRecord(host, proxy, "ams").to_json())

    async def machine(self, mid: str, host: str) -> None:
        record = MachineRecord(
            id=mid,
            app="web",
            name=mid,
            region="ams",
            host_id=host,
            config={"image": "x/y", "services": []},
            version="v1",
            desired="started",
            ipv4="10.0.0.2",
        )
        await self.store.put(machine_key("web", mid), record.to_json())
        status = MachineStatus(state="started", version="v1", host_id=host)
        await self.store.put(status_key("web", mid), status.to_json())

    async def settle(self) -> None:
        revision = (await self.store.range("/apps/")).revision
        while self.catalog.applied < revision:
            await self.catalog.changed(self.catalog.version)

    def get(self, mid: str) -> Machine:
        machine = self.catalog.machine("web", mid)
        assert machine is not None and self.catalog.machine_by_id(mid) == machine
        return machine


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "s.db")
    await store.put(app_key("web"), App(name="web", id="web").to_json())
    yield store
    await store.close()


async def fleet(store: Store, host_id: str) -> Catalog:
    catalog = Catalog(store, host_id=host_id)
    await catalog.start()
    return catalog


async def test_machines_are_placed_on_hosts(store: SqliteStore) -> None:
    catalog = await fleet(store, "a")
    try:
        world = Fleet(store, catalog)
        await world.host("a")
        await world.host("b", proxy="10.1.0.2:4281")
        await world.host("c", proxy="[fd00::3]:4281")
        await world.host("d")  # alive, but no proxy registered
        for mid, host in [("ma", "a"), ("mb", "b"), ("mc", "c"), ("md", "d")]:
            await world.machine(mid, host)
        await world.machine("old", "unregistered")
        await world.machine("none", "")
        await world.settle()
        assert (world.get("ma").local, world.get("ma").reachable) == (True, True)
        mb = world.get("mb")
        assert (mb.local, mb.reachable, mb.backhaul) == (False, True, ("10.1.0.2", 4281))
        assert mb.host_id == "b"
        assert world.get("mc").backhaul == ("fd00::3", 4281)
        assert not world.get("md").local and not world.get("md").reachable
        # Machines of hosts that never registered (older data) are local.
        assert world.get("old").local and world.get("old").reachable
        assert world.get("none").local and world.get("none").reachable

        # A proxy registering makes its host's machines reachable at once.
        await store.put(proxy_key("d"), ProxyRecord("d", "10.1.0.4:4281").to_json())
        await world.settle()
        assert world.get("md").reachable and world.get("md").backhaul == ("10.1.0.4", 4281)
    finally:
        await catalog.stop()


async def test_a_host_losing_its_liveness_key_is_unreachable_at_once(store: SqliteStore) -> None:
    catalog = await fleet(store, "a")
    try:
        world = Fleet(store, catalog)
        await world.host("a")
        await world.host("b", proxy="10.1.0.2:4281")
        await world.machine("ma", "a")
        await world.machine("mb", "b")
        await world.settle()
        assert world.get("mb").reachable

        await store.delete(alive_key("b"))
        await world.settle()
        mb = world.get("mb")
        assert not mb.reachable and mb.started, "unreachable, not stopped"
        assert world.get("ma").reachable

        await store.put(alive_key("b"), "2")
        await world.settle()
        assert world.get("mb").reachable

        # Its proxy going away has the same effect for this proxy.
        await store.delete(proxy_key("b"))
        await world.settle()
        assert not world.get("mb").reachable

        # Our own host down: the fleet routes nothing to it, and neither do we.
        await store.delete(alive_key("a"))
        await world.settle()
        assert not world.get("ma").reachable and world.get("ma").local
    finally:
        await catalog.stop()


async def test_one_host_mode_ignores_hosts(store: SqliteStore) -> None:
    catalog = await fleet(store, "")
    try:
        world = Fleet(store, catalog)
        await world.host("a", alive=False)
        await world.machine("ma", "a")
        await world.settle()
        assert world.get("ma").local and world.get("ma").reachable
    finally:
        await catalog.stop()


async def test_store_errors_keep_the_last_view(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "RETRY_DELAY", 0.0)
    flaky = FlakyStore(store)
    catalog = await fleet(flaky, "a")
    try:
        world = Fleet(store, catalog)
        await world.host("a")
        await world.host("b", proxy="10.1.0.2:4281")
        await world.machine("mb", "b")
        await world.settle()

        flaky.down = True
        await store.put("/apps/other", App(name="other", id="other").to_json())
        # The watch broke, and listing everything again failed too.
        await flaky.failed_read.wait()
        flaky.failed_read.clear()
        await flaky.failed_read.wait()
        assert catalog.has_app("web")
        assert world.get("mb").reachable, "a lost watch must not make hosts look dead"

        # Back: the catalog lists again and catches up with what it missed.
        await store.delete(alive_key("b"))
        flaky.down = False
        await world.settle()
        assert catalog.has_app("other")
        assert not world.get("mb").reachable
    finally:
        await catalog.stop()


async def test_a_machine_ordered_down_takes_no_new_traffic(store: SqliteStore) -> None:
    catalog = await fleet(store, "a")
    try:
        world = Fleet(store, catalog)
        await world.host("a")
        await world.machine("ma", "a")
        await world.settle()
        assert world.get("ma").started
        kv = await store.get(machine_key("web", "ma"))
        assert kv is not None
        record = MachineRecord.from_json(kv.value)
        record.desired = "stopped"
        await store.put(machine_key("web", "ma"), record.to_json())
        await world.settle()
        machine = world.get("ma")
        assert machine.state == "stopping"
        assert not machine.started and not machine.startable
    finally:
        await catalog.stop()
