"""The agent's volumes against a fake volume store: each state carried out, snapshots taken
and restored (here or from another host), growth, removal, and machines mounting them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from roost.agent.agent import Agent
from roost.agent.journal import Journal
from roost.agent.supervisor import AgentContext
from roost.agent.volumes import FetchFailed, VolumeAgent, VolumeUnavailable
from roost.api.apps import Apps
from roost.api.machines import Caller, Machines
from roost.api.placement import Placement
from roost.api.schemas import CreateAppRequest, CreateMachineRequest, CreateVolumeRequest
from roost.api.schemas import ExtendVolumeRequest as Extend
from roost.api.volumes import Volumes
from roost.net.ipam import MachineAddressing
from roost.runtime.base import Mount
from roost.store import SqliteStore
from roost.store.records import (
    Allocation,
    HostRecord,
    SnapshotRecord,
    VolumeRecord,
    alive_key,
    host_key,
    hostalloc_key,
    snapshot_key,
    snapshots_prefix,
    volume_key,
)
from roost.volumes.images import GIB, FsUsage, SnapshotFile, VolumeError
from tests.unit.agent.fakes import FakeDriver, FakeImages, FakeNetworks

APP = "web"
IMAGE = "reg.example/demo/app:v1"


class FakeFiles:
    """Volume images as strings: ``data`` is what a volume holds."""

    def __init__(self) -> None:
        self.images: dict[str, int] = {}
        self.fs_gb: dict[str, int] = {}
        self.data: dict[str, str] = {}
        self.mounted: set[str] = set()
        self.snapshots: dict[str, str] = {}
        self.online = True
        self.broken: set[str] = set()

    def exists(self, volume_id: str) -> bool:
        return volume_id in self.images

    def known(self) -> list[str]:
        return sorted(self.images)

    def known_snapshots(self) -> list[str]:
        return sorted(self.snapshots)

    def usage(self, volume_id: str) -> FsUsage | None:
        if volume_id not in self.mounted:
            return None
        blocks = self.fs_gb[volume_id] * GIB // 4096
        return FsUsage(4096, blocks, blocks - 10, blocks - 10)

    async def create(self, volume_id: str, size_gb: int) -> None:
        if "mkfs" in self.broken:
            raise VolumeError("mkfs.ext4 failed (exit 1): no space left on device")
        self._made(volume_id, size_gb, "")

    async def restore(self, volume_id: str, snapshot_id: str, size_gb: int) -> None:
        self._made(volume_id, size_gb, self.snapshots[snapshot_id])

    async def receive(
        self, volume_id: str, stream: AsyncIterator[bytes], digest: str, size_gb: int
    ) -> None:
        data = b"".join([piece async for piece in stream])
        if _digest(data.decode()) != digest:
            raise VolumeError("the snapshot did not arrive whole: wrong digest")
        self._made(volume_id, size_gb, data.decode())

    def _made(self, volume_id: str, size_gb: int, data: str) -> None:
        self.images[volume_id] = self.fs_gb[volume_id] = size_gb
        self.data[volume_id] = data

    async def mount(self, volume_id: str) -> Path:
        if volume_id not in self.images:
            raise VolumeError(f"volume {volume_id} has no image on this host")
        self.mounted.add(volume_id)
        return Path("/volumes/mnt") / volume_id

    async def extend(self, volume_id: str, size_gb: int, *, offline: bool) -> bool:
        self.images[volume_id] = size_gb
        if self.online or offline:
            self.fs_gb[volume_id] = size_gb
            return True
        return False

    async def snapshot(self, volume_id: str, snapshot_id: str) -> SnapshotFile:
        self.snapshots[snapshot_id] = self.data[volume_id]
        return SnapshotFile(len(self.data[volume_id]), _digest(self.data[volume_id]))

    async def remove(self, volume_id: str) -> None:
        for where in (self.images, self.fs_gb, self.data):
            where.pop(volume_id, None)
        self.mounted.discard(volume_id)

    async def remove_snapshot(self, snapshot_id: str) -> None:
        self.snapshots.pop(snapshot_id, None)


def _digest(data: str) -> str:
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


class FakeSource:
    """Other hosts' snapshots, from their fake files."""

    def __init__(self, hosts: dict[str, FakeFiles]) -> None:
        self.hosts = hosts
        self.down = False

    @contextlib.asynccontextmanager
    async def open(self, snapshot: SnapshotRecord) -> AsyncIterator[AsyncIterator[bytes]]:
        if self.down:
            raise FetchFailed(f"host {snapshot.host_id}, which keeps {snapshot.id}, is down")
        data = self.hosts[snapshot.host_id].snapshots[snapshot.id].encode()

        async def stream() -> AsyncIterator[bytes]:
            yield data[:3]
            yield data[3:]

        yield stream()


@dataclass
class World:
    store: SqliteStore
    volumes: Volumes
    machines: Machines
    files: dict[str, FakeFiles]
    source: FakeSource
    running: set[str] = field(default_factory=set)
    clock: list[float] = field(default_factory=lambda: [time.time()])
    agents: dict[str, VolumeAgent] = field(default_factory=dict)

    def agent(self, host_id: str = "h1") -> VolumeAgent:
        if host_id not in self.agents:
            self.agents[host_id] = self.new_agent(host_id)
        return self.agents[host_id]

    def new_agent(self, host_id: str = "h1") -> VolumeAgent:
        async def running(machine_id: str) -> bool:
            return machine_id in self.running

        return VolumeAgent(
            self.store,
            HostRecord(id=host_id, region="test"),
            self.files[host_id],
            running=running,
            source=self.source,
            clock=lambda: self.clock[0],
        )

    async def create(self, **body: Any) -> str:
        req = CreateVolumeRequest.model_validate({"name": "data", "size_gb": 1, **body})
        return (await self.volumes.create(APP, req))["id"]

    async def record(self, volume_id: str) -> VolumeRecord | None:
        kv = await self.store.get(volume_key(APP, volume_id))
        return VolumeRecord.from_json(kv.value) if kv else None

    async def state(self, volume_id: str) -> str | None:
        record = await self.record(volume_id)
        return record.state if record else None

    async def snapshot(self, volume_id: str, snapshot_id: str) -> SnapshotRecord:
        kv = await self.store.get(snapshot_key(volume_id, snapshot_id))
        assert kv is not None
        return SnapshotRecord.from_json(kv.value)

    async def disk(self, host_id: str = "h1") -> int:
        kv = await self.store.get(hostalloc_key(host_id))
        return Allocation.from_json(kv.value).disk_gb if kv else 0


async def add_host(store: SqliteStore, host_id: str, region: str) -> None:
    host = HostRecord(id=host_id, region=region, cpus=16, memory_mb=4096, disk_gb=100)
    await store.put(host_key(host_id), host.to_json())
    await store.put(alive_key(host_id), "1")


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store = SqliteStore(":memory:")
    await store.start()
    await add_host(store, "h1", "test")
    await add_host(store, "h2", "fra")
    placement = Placement(store)
    machines = Machines(
        store, placement, MachineAddressing("172.30.9.0/24", "fdaa:0:9::/64"), region="test"
    )
    volumes = Volumes(store, placement, region="test")
    await Apps(store, machines, volumes=volumes).create(CreateAppRequest(name=APP))
    files = {"h1": FakeFiles(), "h2": FakeFiles()}
    yield World(store, volumes, machines, files, FakeSource(files))
    await store.close()


async def test_a_new_volume_is_made_mounted_and_measured(world: World) -> None:
    vid = await world.create(size_gb=2)
    assert await world.agent().reconcile() is False
    record = await world.record(vid)
    assert record is not None
    assert (record.state, record.error, record.block_size) == ("created", "", 4096)
    assert record.blocks == 2 * GIB // 4096
    assert world.files["h1"].mounted == {vid}
    async with world.agent().held(vid) as path:
        assert path == Path("/volumes/mnt") / vid


async def test_a_volume_that_cannot_be_made_fails_and_says_why(world: World) -> None:
    world.files["h1"].broken.add("mkfs")
    vid = await world.create()
    await world.agent().reconcile()
    record = await world.record(vid)
    assert record is not None and record.state == "failed"
    assert "no space left on device" in record.error
    with pytest.raises(VolumeUnavailable, match=r"failed: mkfs\.ext4 failed"):
        async with world.agent().held(vid):
            pass


async def test_a_snapshot_restores_on_the_same_host(world: World) -> None:
    vid = await world.create()
    await world.agent().reconcile()
    world.files["h1"].data[vid] = "precious"
    snapshot_id = (await world.volumes.create_snapshot(APP, vid))["id"]
    restored = await world.create(snapshot_id=snapshot_id, size_gb=3)
    world.clock[0] += 1
    await world.agent().reconcile()
    taken = await world.snapshot(vid, snapshot_id)
    assert (taken.status, taken.size, taken.digest) == ("created", 8, _digest("precious"))
    assert taken.volume_size == GIB
    # The restore saw the snapshot still pending in that pass; the snapshot's write is
    # what wakes the next one.
    assert await world.state(restored) == "creating"
    await world.agent().reconcile()
    assert await world.state(restored) == "created"
    assert world.files["h1"].data[restored] == "precious"
    assert world.files["h1"].images[restored] == 3


async def test_a_snapshot_restores_from_another_host(world: World) -> None:
    vid = await world.create(region="fra")
    await world.agent("h2").reconcile()
    world.files["h2"].data[vid] = "from fra"
    snapshot_id = (await world.volumes.create_snapshot(APP, vid))["id"]
    await world.agent("h2").reconcile()
    restored = await world.create(region="test", snapshot_id=snapshot_id)

    world.source.down = True
    assert await world.agent().reconcile() is True, "tried again later"
    record = await world.record(restored)
    assert record is not None and record.state == "creating"
    assert "is down" in record.error

    world.source.down = False
    assert await world.agent().reconcile() is False
    record = await world.record(restored)
    assert record is not None and (record.state, record.error) == ("created", "")
    assert world.files["h1"].data[restored] == "from fra"


async def test_a_fork_waits_for_its_snapshot(world: World) -> None:
    source = await world.create(region="fra")
    await world.agent("h2").reconcile()
    world.files["h2"].data[source] = "forked"
    fork = await world.create(region="test", source_volume_id=source)
    assert await world.agent().reconcile() is False
    assert await world.state(fork) == "creating"
    await world.agent("h2").reconcile()
    await world.agent().reconcile()
    assert await world.state(fork) == "created"
    assert world.files["h1"].data[fork] == "forked"


async def test_a_broken_or_gone_snapshot_fails_the_restore(world: World) -> None:
    vid = await world.create()
    await world.agent().reconcile()
    snapshot_id = (await world.volumes.create_snapshot(APP, vid))["id"]
    await world.agent().reconcile()
    restored = await world.create(snapshot_id=snapshot_id)
    await world.store.delete(snapshots_prefix(vid), prefix=True)
    await world.agent().reconcile()
    record = await world.record(restored)
    assert record is not None and record.state == "failed"
    assert record.error == f"snapshot {snapshot_id} is gone"


async def test_a_snapshot_of_a_volume_being_destroyed_fails(world: World) -> None:
    vid = await world.create()
    await world.agent().reconcile()
    snapshot_id = (await world.volumes.create_snapshot(APP, vid))["id"]
    await world.volumes.destroy(APP, vid)
    await world.agent().reconcile()
    snapshot = await world.snapshot(vid, snapshot_id)
    assert (snapshot.status, snapshot.error) == ("failed", "its volume is gone")


async def test_extend_grows_online(world: World) -> None:
    vid = await world.create(size_gb=1)
    await world.agent().reconcile()
    await world.volumes.extend(APP, vid, Extend(size_gb=4))
    await world.agent().reconcile()
    record = await world.record(vid)
    assert record is not None and (record.state, record.size_gb) == ("created", 4)
    assert record.blocks == 4 * GIB // 4096
    assert world.files["h1"].fs_gb[vid] == 4


async def test_extend_waits_for_the_machines_next_start_where_it_cannot_grow_online(
    world: World,
) -> None:
    world.files["h1"].online = False
    vid = await world.create(size_gb=1)
    await world.agent().reconcile()
    world.running.add("m1")
    volume = await world.record(vid)
    assert volume is not None
    volume.attached_machine_id = "m1"
    await world.store.put(volume_key(APP, vid), volume.to_json())
    await world.volumes.extend(APP, vid, Extend(size_gb=2))
    assert await world.agent().reconcile() is False
    assert await world.state(vid) == "extending"
    assert (world.files["h1"].images[vid], world.files["h1"].fs_gb[vid]) == (2, 1)

    world.running.discard("m1")
    async with world.agent().held(vid):
        assert world.files["h1"].fs_gb[vid] == 2, "grown before the machine starts"
    await world.agent().reconcile()
    assert await world.state(vid) == "created"


async def test_extend_grows_offline_when_no_machine_runs_on_it(world: World) -> None:
    world.files["h1"].online = False
    vid = await world.create(size_gb=1)
    await world.agent().reconcile()
    await world.volumes.extend(APP, vid, Extend(size_gb=2))
    await world.agent().reconcile()
    assert await world.state(vid) == "created"
    assert world.files["h1"].fs_gb[vid] == 2


async def test_destroying_waits_for_the_machine_then_gives_the_disk_back(world: World) -> None:
    vid = await world.create(size_gb=7)
    await world.agent().reconcile()
    req = CreateMachineRequest.model_validate(
        {"config": {"image": IMAGE, "mounts": [{"volume": vid, "path": "/data"}]}}
    )
    mid = (await world.machines.create(APP, req, Caller("t", "tester")))["id"]
    await world.machines.destroy(APP, mid, None, force=True)
    await world.volumes.destroy(APP, vid)
    assert await world.disk() == 7
    await world.agent().reconcile()
    assert await world.state(vid) == "destroying", "its machine still holds it"
    assert vid in world.files["h1"].images

    # The machine's release (the agent's) detaches it; here the record simply goes.
    await world.store.delete(f"/machines/{APP}/{mid}")
    await world.agent().reconcile()
    assert await world.record(vid) is None
    assert vid not in world.files["h1"].images
    assert await world.disk() == 0
    with pytest.raises(VolumeUnavailable, match="not ready"):
        async with world.agent().held(vid, timeout=0.01):
            pass


async def test_snapshots_expire_after_their_retention(world: World) -> None:
    vid = await world.create(snapshot_retention=2)
    await world.agent().reconcile()
    snapshot_id = (await world.volumes.create_snapshot(APP, vid))["id"]
    await world.agent().reconcile()
    world.clock[0] += 86400
    await world.agent().reconcile()
    assert snapshot_id in world.files["h1"].snapshots
    world.clock[0] += 86400 + 1
    await world.agent().reconcile()
    assert snapshot_id not in world.files["h1"].snapshots
    assert await world.store.get(snapshot_key(vid, snapshot_id)) is None


async def test_leftovers_the_store_does_not_know_are_removed_once(world: World) -> None:
    files = world.files["h1"]
    files.images["vol_" + "0" * 16] = 1
    files.snapshots["vs_" + "0" * 16] = "old"
    vid = await world.create()
    await world.agent().reconcile()
    assert files.known() == [vid] and files.known_snapshots() == []


async def test_a_machine_mounts_its_volume_and_gives_it_back(world: World, tmp_path: Path) -> None:
    """The whole agent: it follows the store, the supervisor mounts the volume into the
    machine, and the machine's release detaches it."""
    driver = FakeDriver()
    host = HostRecord(id="h1", region="test", cpus=16, memory_mb=4096, disk_gb=100)

    async def running(machine_id: str) -> bool:
        return machine_id in driver.running

    ctx = AgentContext(
        store=world.store,
        driver=driver,
        images=FakeImages(),
        networks=FakeNetworks(),
        journal=Journal(tmp_path / "journal.db"),
        host=host,
        clock=time.time,
        run_checks=False,
        volumes=VolumeAgent(world.store, host, world.files["h1"], running=running),
    )
    agent = Agent(ctx, alive_ttl=30)
    await agent.start()
    try:
        vid = await world.create()
        config = {"image": IMAGE, "mounts": [{"volume": vid, "path": "/data"}]}
        req = CreateMachineRequest.model_validate({"config": config})
        mid = (await world.machines.create(APP, req, Caller("t", "tester")))["id"]
        await world.machines.wait(APP, mid, states=["started"], timeout=5)
        assert driver.running[mid].spec.mounts == (Mount(Path("/volumes/mnt") / vid, "/data"),)

        await world.machines.destroy(APP, mid, None, force=True)
        await world.machines.wait(APP, mid, states=["destroyed"], timeout=5)
        assert (await world.record(vid)).attached_machine_id is None  # type: ignore[union-attr]
        await world.volumes.destroy(APP, vid)
        await until_store(world, lambda: world.record(vid), lambda record: record is None)
        assert vid not in world.files["h1"].images
    finally:
        await agent.stop()
        ctx.journal.close()


async def until_store(
    world: World, read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 5
) -> None:
    """Until ``done(await read())``, re-read on every change to the store."""
    async with asyncio.timeout(timeout):
        revision = (await world.store.range("/", limit=1)).revision
        if done(await read()):
            return
        async for _ in world.store.watch("/", revision + 1):
            if done(await read()):
                return
