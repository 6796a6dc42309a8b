"""A proxy world without root: a real catalog over an in-memory store, machines that are
just records (their "address" a loopback server the test runs), a fake control plane."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from roost.proxy.catalog import Catalog
from roost.proxy.metrics import ProxyMetrics
from roost.proxy.router import Router
from roost.store import SqliteStore
from roost.store.records import App, MachineRecord, MachineStatus, app_key, machine_key, status_key

_ids = itertools.count(0x10000000000000)


def service(
    port: int = 8080,
    *,
    soft: int | None = None,
    hard: int | None = None,
    autostop: str | bool = False,
    autostart: bool = True,
    minimum: int = 0,
    public: int = 80,
    handlers: tuple[str, ...] = ("http",),
) -> dict[str, Any]:
    concurrency: dict[str, Any] = {"type": "requests"}
    if soft:
        concurrency["soft_limit"] = soft
    if hard:
        concurrency["hard_limit"] = hard
    return {
        "internal_port": port,
        "ports": [{"port": public, "handlers": list(handlers)}],
        "concurrency": concurrency,
        "autostop": autostop,
        "autostart": autostart,
        "min_machines_running": minimum,
    }


@dataclass
class FakeControl:
    world: World
    starts: list[str] = field(default_factory=list)
    stops: list[tuple[str, bool]] = field(default_factory=list)

    async def start(self, app: str, machine_id: str) -> None:
        await self.world.set_state(app, machine_id, "started")
        self.starts.append(machine_id)

    async def stop(self, app: str, machine_id: str, *, suspend: bool) -> None:
        await self.world.set_state(app, machine_id, "stopped")
        self.stops.append((machine_id, suspend))


@dataclass
class World:
    store: SqliteStore
    catalog: Catalog
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    control: FakeControl = field(init=False)
    router: Router = field(init=False)

    def __post_init__(self) -> None:
        self.control = FakeControl(self)
        self.router = Router(
            self.catalog,
            self.control,
            self.metrics,
            region="here",
            wake_timeout=5,
            queue_timeout=0.5,
            probe=_always_up,
        )

    async def app(self, name: str) -> str:
        await self.store.put(app_key(name), App(name=name, id=name).to_json())
        return name

    async def machine(
        self,
        app: str,
        *services: dict[str, Any],
        state: str = "started",
        region: str = "here",
        address: str = "127.0.0.1",
        cordoned: bool = False,
        checks: list[dict[str, str]] | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        mid = f"{next(_ids):014x}"
        config: dict[str, Any] = {"image": "x/y", "services": list(services)}
        if env:
            config["env"] = env
        record = MachineRecord(
            id=mid,
            app=app,
            name=mid,
            region=region,
            host_id="h",
            config=config,
            version="v1",
            desired="started",
            cordoned=cordoned,
            ipv4=address,
        )
        status = MachineStatus(state=state, version="v1", checks=checks or [])
        await self.store.put(machine_key(app, mid), record.to_json())
        await self.store.put(status_key(app, mid), status.to_json())
        await self.settle()
        return mid

    async def set_state(self, app: str, mid: str, state: str) -> None:
        kv = await self.store.get(status_key(app, mid))
        assert kv is not None
        status = MachineStatus.from_json(kv.value)
        status.state = state
        await self.store.put(status_key(app, mid), status.to_json())

    async def settle(self) -> None:
        """Until the catalog has seen every write made so far."""
        revision = (await self.store.range("/apps/")).revision
        while self.catalog.applied < revision:
            await self.catalog.changed(self.catalog.version)


async def _always_up(address: str, port: int) -> bool:
    return True


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store = SqliteStore(":memory:")
    await store.start()
    catalog = Catalog(store)
    await catalog.start()
    yield World(store, catalog)
    await catalog.stop()
    await store.close()
