"""The API over an in-memory store, with one registered host and no agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from roost.api.app import create_app
from roost.api.apps import Apps
from roost.api.auth import Authenticator
from roost.api.machines import Machines
from roost.api.orgs import Orgs
from roost.api.placement import Placement
from roost.api.services import Services
from roost.api.volumes import Volumes
from roost.net.ipam import MachineAddressing
from roost.store import SqliteStore
from roost.store.records import (
    HostRecord,
    MachineRecord,
    MachineStatus,
    alive_key,
    host_key,
    machine_key,
    status_key,
)


@dataclass
class FakeClock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    client: httpx.AsyncClient
    store: SqliteStore
    clock: FakeClock
    token: str

    async def set_state(self, app: str, mid: str, state: str) -> None:
        """Play the agent: write a machine's actual state."""
        kv = await self.store.get(status_key(app, mid))
        assert kv is not None
        status = MachineStatus.from_json(kv.value)
        status.state = state
        record_kv = await self.store.get(machine_key(app, mid))
        assert record_kv is not None
        status.generation = MachineRecord.from_json(record_kv.value).generation
        await self.store.put(status_key(app, mid), status.to_json())


async def add_host(
    store: SqliteStore, host_id: str, region: str, memory_mb: int = 4096, disk_gb: int = 100
) -> None:
    host = HostRecord(id=host_id, region=region, cpus=16, memory_mb=memory_mb, disk_gb=disk_gb)
    await store.put(host_key(host_id), host.to_json())
    await store.put(alive_key(host_id), "1")


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    store = SqliteStore(":memory:")
    await store.start()
    clock = FakeClock()
    await add_host(store, "h1", "test")
    auth = Authenticator(store)
    token = await auth.create_token("tester")
    placement = Placement(store)
    machines = Machines(
        store,
        placement,
        MachineAddressing("172.30.9.0/24", "fdaa:0:9::/64"),
        region="test",
        clock=clock,
    )
    volumes = Volumes(store, placement, region="test", clock=clock)
    services = Services(
        apps=Apps(store, machines, volumes=volumes, clock=clock),
        machines=machines,
        auth=auth,
        volumes=volumes,
        orgs=Orgs(store, machines, volumes, placement, region="test"),
    )
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://api",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield Api(client, store, clock, token)
    await store.close()
