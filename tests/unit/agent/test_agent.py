"""The agent against a fake driver: generations, exits, restarts, crash recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from roost.agent.agent import Agent
from roost.agent.journal import Journal, Run
from roost.agent.supervisor import AgentContext
from roost.api.apps import Apps
from roost.api.machines import Caller, Machines
from roost.api.placement import Placement
from roost.api.schemas import CreateAppRequest, CreateMachineRequest
from roost.net.ipam import MachineAddressing
from roost.store import SqliteStore
from roost.store.records import (
    Allocation,
    HostRecord,
    MachineRecord,
    MachineStatus,
    hostalloc_key,
    ipam_key,
)
from tests.unit.agent.fakes import FakeDriver, FakeImages, FakeNetworks

CALLER = Caller("t", "tester")
IMAGE = "reg.example/demo/app:v1"


@dataclass
class World:
    store: SqliteStore
    machines: Machines
    driver: FakeDriver
    images: FakeImages
    networks: FakeNetworks
    tmp: Path
    agent: Agent | None = None

    def new_agent(self) -> Agent:
        journal = Journal(self.tmp / "journal.db")
        ctx = AgentContext(
            store=self.store,
            driver=self.driver,
            images=self.images,
            networks=self.networks,
            journal=journal,
            host=HostRecord(id="h1", region="test", cpus=16, memory_mb=4096),
            clock=time.time,
            sleep=_no_sleep,
            run_checks=False,
        )
        return Agent(ctx, alive_ttl=30)

    async def start_agent(self) -> Agent:
        self.agent = self.new_agent()
        await self.agent.start()
        return self.agent

    async def stop_agent(self) -> None:
        assert self.agent is not None
        await self.agent.stop()
        self.agent.ctx.journal.close()
        self.agent = None

    async def create(self, **config: Any) -> str:
        req = CreateMachineRequest.model_validate({"config": {"image": IMAGE, **config}})
        return (await self.machines.create("web", req, CALLER))["id"]

    async def wait(self, mid: str, state: str) -> None:
        await self.machines.wait("web", mid, states=[state], timeout=5)

    async def order(self, mid: str, desired: str, action: str) -> int:
        """Record an order as the API would, behind the agent's back; its generation."""
        kv = await self.store.get(f"/machines/web/{mid}")
        assert kv is not None
        record = MachineRecord.from_json(kv.value)
        record.desired, record.generation, record.action = desired, record.generation + 1, action
        await self.store.put(kv.key, record.to_json())
        return record.generation

    def journal_run(self, mid: str, generation: int, plan: str) -> None:
        """Leave a run at its first step, as an agent killed just after starting it would."""
        journal = Journal(self.tmp / "journal.db")
        journal.begin(Run(mid, "web", generation, plan))
        journal.close()

    async def kinds(self, mid: str) -> list[tuple[str, str, str]]:
        events = await self.machines.events("web", mid, 50)
        return [(e["type"], e["status"], e["source"]) for e in reversed(events)]


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteStore(":memory:")
    await store.start()
    machines = Machines(
        store,
        Placement(store),
        MachineAddressing("172.30.9.0/24", "fdaa:0:9::/64"),
        region="test",
    )
    await Apps(store, machines).create(CreateAppRequest(name="web"))
    w = World(store, machines, FakeDriver(), FakeImages(), FakeNetworks(), tmp_path)
    await w.start_agent()
    yield w
    if w.agent is not None:
        await w.stop_agent()
    await store.close()


async def test_launch_builds_the_process_from_image_and_config(world: World) -> None:
    mid = await world.create(env={"MINE": "2"}, init={"cmd": ["serve", "--port", "80"]})
    await world.wait(mid, "started")
    spec = world.driver.running[mid].spec
    assert spec.process.argv == ["serve", "--port", "80"]
    assert spec.process.env["FROM_IMAGE"] == "1" and spec.process.env["MINE"] == "2"
    assert spec.process.env["FLY_MACHINE_ID"] == mid
    assert spec.netns == Path(f"/run/netns/fake-{mid}")
    assert spec.resources.memory_mb == 256
    assert await world.kinds(mid) == [
        ("launch", "created", "user"),
        ("start", "started", "flyd"),
    ]
    machine = await world.machines.get("web", mid)
    assert machine["image_ref"]["digest"] == "sha256:" + "ab" * 32


async def test_skip_launch_stays_created(world: World) -> None:
    req = CreateMachineRequest.model_validate({"config": {"image": IMAGE}, "skip_launch": True})
    mid = (await world.machines.create("web", req, CALLER))["id"]
    await world.wait(mid, "created")
    await asyncio.sleep(0.05)
    assert world.driver.starts == []
    await world.machines.start("web", mid, None)
    await world.wait(mid, "started")


async def test_stop_start_uses_the_pinned_digest(world: World) -> None:
    mid = await world.create(stop_config={"signal": "SIGTERM"})
    await world.wait(mid, "started")
    await world.machines.stop("web", mid, None)
    await world.wait(mid, "stopped")
    assert world.driver.exited[mid].exit_code == 128 + 15
    await world.machines.start("web", mid, None)
    await world.wait(mid, "started")
    assert world.images.pulls[-1].endswith("@sha256:" + "ab" * 32)
    kinds = await world.kinds(mid)
    assert kinds[2:] == [
        ("exit", "stopped", "flyd"),
        ("stop", "stopped", "user"),
        ("start", "started", "flyd"),
    ]


async def test_natural_exit_and_on_failure_restarts(world: World) -> None:
    mid = await world.create(restart={"policy": "on-failure", "max_retries": 1})
    await world.wait(mid, "started")
    world.driver.exit(mid, 3)
    await world.driver.until(lambda: len(world.driver.starts) == 2)
    await world.wait(mid, "started")
    world.driver.exit(mid, 3)
    await world.wait(mid, "stopped")
    await asyncio.sleep(0.05)
    assert len(world.driver.starts) == 2
    kinds = await world.kinds(mid)
    assert ("restart", "starting", "flyd") in kinds
    assert kinds[-1] == ("exit", "stopped", "flyd")


async def test_exit_zero_with_on_failure_stays_stopped(world: World) -> None:
    mid = await world.create()
    await world.wait(mid, "started")
    world.driver.exit(mid, 0)
    await world.wait(mid, "stopped")
    assert world.driver.starts == [mid]


async def test_auto_destroy(world: World) -> None:
    mid = await world.create(auto_destroy=True, restart={"policy": "no"})
    await world.wait(mid, "started")
    world.driver.exit(mid, 0)
    await world.wait(mid, "destroyed")
    assert mid in world.driver.destroyed


async def test_destroy_releases_address_and_capacity(world: World) -> None:
    mid = await world.create(guest={"memory_mb": 512, "cpus": 2})
    await world.wait(mid, "started")
    record = await world.machines.get("web", mid)
    alloc = Allocation.from_json((await world.store.get(hostalloc_key("h1"))).value)  # type: ignore[union-attr]
    assert (alloc.memory_mb, alloc.cpus) == (512, 2)
    await world.machines.destroy("web", mid, None, force=True)
    await world.wait(mid, "destroyed")
    alloc = Allocation.from_json((await world.store.get(hostalloc_key("h1"))).value)  # type: ignore[union-attr]
    assert (alloc.memory_mb, alloc.cpus, alloc.machines) == (0, 0, 0)
    assert await world.store.get(ipam_key(2)) is None
    assert mid in world.networks.deleted and mid not in world.driver.running
    assert record["private_ip"] == "fdaa:0:9::2"


async def test_update_replaces_the_running_process(world: World) -> None:
    mid = await world.create(env={"V": "1"})
    await world.wait(mid, "started")
    current = await world.machines.get("web", mid)
    from roost.api.schemas import UpdateMachineRequest

    req = UpdateMachineRequest.model_validate({"config": {"image": IMAGE, "env": {"V": "2"}}})
    updated = await world.machines.update("web", mid, req, None)
    await world.machines.wait("web", mid, states=["started"], timeout=5, version=updated["version"])
    assert world.driver.running[mid].spec.process.env["V"] == "2"
    assert updated["version"] != current["version"]
    assert ("update", "replacing", "user") in await world.kinds(mid)


async def test_pull_failure_marks_failed(world: World) -> None:
    world.images.broken.add("demo/broken")
    req = CreateMachineRequest.model_validate({"config": {"image": "reg.example/demo/broken:1"}})
    mid = (await world.machines.create("web", req, CALLER))["id"]
    await world.wait(mid, "failed")
    events = await world.machines.events("web", mid, 10)
    assert "demo/broken" in events[0]["message"] and "request" not in events[0]
    await world.machines.destroy("web", mid, None, force=False)
    await world.wait(mid, "destroyed")


async def test_agent_restart_adopts_running_machines(world: World) -> None:
    mid = await world.create()
    await world.wait(mid, "started")
    await world.stop_agent()
    assert mid in world.driver.running, "machines outlive the agent"
    await world.start_agent()
    await asyncio.sleep(0.05)
    assert world.driver.starts == [mid], "adopted, not started again"
    await world.machines.stop("web", mid, None)
    await world.wait(mid, "stopped")


async def test_exit_while_agent_down_applies_the_policy(world: World) -> None:
    mid = await world.create(restart={"policy": "always"})
    await world.wait(mid, "started")
    await world.stop_agent()
    world.driver.exit(mid, 1)
    await world.start_agent()
    await world.driver.until(lambda: len(world.driver.starts) == 2)
    await world.wait(mid, "started")


async def test_interrupted_run_is_resumed(world: World) -> None:
    mid = await world.create()
    await world.wait(mid, "started")
    await world.stop_agent()
    # The previous agent died while applying a stop: the desire is recorded and the
    # journal holds the run at its first step.
    world.journal_run(mid, await world.order(mid, "stopped", "stop"), "stop")
    await world.start_agent()
    await world.wait(mid, "stopped")
    assert mid not in world.driver.running
    assert world.agent is not None and world.agent.ctx.journal.active() == {}


async def test_an_order_newer_than_the_resumed_run_is_applied_after_it(world: World) -> None:
    """The agent died mid-stop; while it was down a destroy was ordered. Finishing the
    stop must not mark the destroy's generation applied."""
    mid = await world.create()
    await world.wait(mid, "started")
    await world.stop_agent()
    world.journal_run(mid, await world.order(mid, "stopped", "stop"), "stop")
    await world.order(mid, "destroyed", "destroy")
    await world.start_agent()
    await world.wait(mid, "destroyed")
    assert mid in world.driver.destroyed


@pytest.mark.parametrize("recorded", ["stopping", "created", "starting", "replacing"])
async def test_any_recorded_state_converges_after_a_crash(world: World, recorded: str) -> None:
    """The agent died mid-way, leaving a status that no longer matches what runs; a new
    order arrives. The machine ends where the order says, with a settled status."""
    mid = await world.create()
    await world.wait(mid, "started")
    await world.stop_agent()
    status_key = f"/status/web/{mid}"
    kv = await world.store.get(status_key)
    assert kv is not None
    status = MachineStatus.from_json(kv.value)
    status.state = recorded
    await world.store.put(status_key, status.to_json())
    await world.order(mid, "started", "start")  # recorded by the API before the crash
    await world.start_agent()
    await world.wait(mid, "started")
    assert mid in world.driver.running and world.driver.starts == [mid], "adopted, not twice"
    await world.machines.stop("web", mid, None)
    await world.wait(mid, "stopped")


async def test_orphans_are_reaped_on_start(world: World) -> None:
    await world.stop_agent()
    from roost.runtime.base import LaunchSpec, ProcessSpec

    await world.driver.prepare(LaunchSpec("0123456789abcd", Path("/x"), ProcessSpec(["a"], {})))
    await world.driver.start("0123456789abcd")
    await world.start_agent()
    assert "0123456789abcd" in world.driver.destroyed


async def test_signal_command(world: World) -> None:
    mid = await world.create()
    await world.wait(mid, "started")
    await world.machines.signal("web", mid, 10)
    await world.driver.until(lambda: bool(world.driver.running[mid].signals))
    assert world.driver.running[mid].signals == [10]
    listing = await world.store.range("/commands/")
    if listing.kvs:
        async for event in world.store.watch("/commands/", listing.revision + 1):
            if event.type == "delete":
                break


async def test_destroyed_machines_are_forgotten_after_a_while(world: World) -> None:
    mid = await world.create()
    await world.wait(mid, "started")
    await world.machines.destroy("web", mid, None, force=True)
    await world.wait(mid, "destroyed")
    assert world.agent is not None
    assert await world.agent.forget_destroyed() == [], "kept for a while first"
    world.agent.ctx.clock = lambda: time.time() + 2 * 3600
    assert await world.agent.forget_destroyed() == [mid]
    assert (await world.store.range(f"/events/web/{mid}/")).kvs == []
    listed = await world.machines.list("web", include_deleted=True)
    assert [m["id"] for m in listed] == []
