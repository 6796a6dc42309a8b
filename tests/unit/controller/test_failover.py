"""Two agents with fake drivers over one store: placement spread, host loss, standbys,
fencing and a returning host."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from roost.agent.agent import Agent
from roost.agent.journal import Journal
from roost.agent.supervisor import AgentContext
from roost.api.apps import Apps
from roost.api.errors import InsufficientCapacity
from roost.api.machines import Caller, Machines
from roost.api.placement import Placement
from roost.api.schemas import CreateAppRequest, CreateMachineRequest
from roost.controller.election import Election
from roost.controller.failover import Failover
from roost.net.ipam import MachineAddressing
from roost.store import SqliteStore
from roost.store.records import HostRecord, MachineRecord, alive_key, host_key, machine_key
from tests.unit.agent.fakes import FakeDriver, FakeImages, FakeNetworks

CALLER = Caller("t", "tester")
IMAGE = "reg.example/demo/app:v1"


@dataclass
class Fleet:
    store: SqliteStore
    machines: Machines
    agents: dict[str, Agent]
    drivers: dict[str, FakeDriver]

    async def create(self, region: str = "", **config: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"config": {"image": IMAGE, **config}}
        if region:
            body["region"] = region
        if config.get("standbys"):
            body["skip_launch"] = True
        req = CreateMachineRequest.model_validate(body)
        return await self.machines.create("web", req, CALLER)

    async def wait(self, mid: str, state: str) -> None:
        await self.machines.wait("web", mid, states=[state], timeout=5)

    async def record(self, mid: str) -> MachineRecord:
        kv = await self.store.get(machine_key("web", mid))
        assert kv is not None
        return MachineRecord.from_json(kv.value)

    async def cut_off(self, host: str) -> None:
        """What a partition looks like from the store: the host goes silent and its
        liveness lease runs out (revoking it stands in for waiting out the TTL)."""
        agent = self.agents[host]
        await agent.isolate()
        await self.store.revoke_lease(agent._lease)


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    store = SqliteStore(":memory:")
    await store.start()
    machines = Machines(
        store,
        Placement(store),
        MachineAddressing("172.30.9.0/24", "fdaa:0:9::/64"),
        region="ams",
    )
    await Apps(store, machines).create(CreateAppRequest(name="web"))
    agents: dict[str, Agent] = {}
    drivers: dict[str, FakeDriver] = {}
    for host, region in (("h1", "ams"), ("h2", "ams"), ("h3", "fra")):
        drivers[host] = FakeDriver()
        ctx = AgentContext(
            store=store,
            driver=drivers[host],
            images=FakeImages(),
            networks=FakeNetworks(),
            journal=Journal(tmp_path / f"{host}.db"),
            host=HostRecord(id=host, region=region, cpus=16, memory_mb=1024),
            clock=time.time,
            sleep=_no_sleep,
            run_checks=False,
        )
        agents[host] = Agent(ctx, alive_ttl=30)
        await agents[host].start()
    yield Fleet(store, machines, agents, drivers)
    for agent in agents.values():
        await agent.stop()
        agent.ctx.journal.close()
    await store.close()


async def test_an_apps_machines_spread_over_hosts(fleet: Fleet) -> None:
    hosts = [(await fleet.record((await fleet.create("ams"))["id"])).host_id for _ in range(4)]
    assert sorted(hosts) == ["h1", "h1", "h2", "h2"]


async def test_no_capacity_names_the_regions_tried(fleet: Fleet) -> None:
    with pytest.raises(InsufficientCapacity, match="region\\(s\\) fra, ams"):
        await fleet.create("fra,ams", guest={"memory_mb": 2048})


async def test_regions_in_order_and_fallback(fleet: Fleet) -> None:
    first = await fleet.create("fra,ams", guest={"memory_mb": 1024})
    second = await fleet.create("fra,ams", guest={"memory_mb": 1024})
    assert (first["region"], second["region"]) == ("fra", "ams")


async def test_lost_host_machines_are_unreachable_and_their_standbys_start(
    fleet: Fleet,
) -> None:
    watched = await fleet.create("fra")
    await fleet.wait(watched["id"], "started")
    standby = await fleet.create("ams", standbys=[watched["id"]])
    bystander = await fleet.create("fra")
    await fleet.wait(bystander["id"], "started")
    assert (await fleet.machines.get("web", watched["id"]))["host_status"] == "ok"

    failover = Failover(fleet.store)
    controller = asyncio.create_task(failover.run())
    try:
        await fleet.cut_off("h3")
        await fleet.wait(standby["id"], "started")
        got = await fleet.machines.get("web", watched["id"])
        assert got["host_status"] == "unreachable"
        listed = {m["id"]: m for m in await fleet.machines.list("web")}
        assert listed[bystander["id"]]["host_status"] == "unreachable"
        assert [(t.standby, t.watched) for t in failover.takeovers] == [
            (standby["id"], watched["id"])
        ]
        assert (await fleet.record(watched["id"])).desired == "stopped"
        assert (await fleet.record(bystander["id"])).desired == "started"
        host = HostRecord.from_json((await fleet.store.get(host_key("h3"))).value)  # type: ignore[union-attr]
        assert host.lost_at

        # The host returns: it joins under a new epoch and reconciles from the store,
        # so the replaced machine stops there and only the standby runs it.
        await fleet.agents["h3"].restore()
        await fleet.wait(watched["id"], "stopped")
        assert watched["id"] not in fleet.drivers["h3"].running
        standby_host = (await fleet.record(standby["id"])).host_id
        assert standby["id"] in fleet.drivers[standby_host].running
        assert bystander["id"] in fleet.drivers["h3"].running
        back = await fleet.machines.get("web", bystander["id"])
        assert back["host_status"] == "ok"
        assert (await fleet.store.get(alive_key("h3"))).value == str(host.epoch + 1)  # type: ignore[union-attr]
        events = await fleet.machines.events("web", watched["id"], 10)
        assert ("stop", "replaced_by_standby") in [(e["type"], e["status"]) for e in events]
    finally:
        controller.cancel()
        await asyncio.gather(controller, return_exceptions=True)


async def test_a_new_leader_acts_on_hosts_lost_while_nobody_led(fleet: Fleet) -> None:
    watched = await fleet.create("fra")
    await fleet.wait(watched["id"], "started")
    standby = await fleet.create("ams", standbys=[watched["id"]])
    await fleet.cut_off("h3")
    failover = Failover(fleet.store)
    controller = asyncio.create_task(failover.run())
    try:
        await fleet.wait(standby["id"], "started")
        # Acting again changes nothing: the standby already runs.
        assert await failover.host_lost("h3") == []
    finally:
        controller.cancel()
        await asyncio.gather(controller, return_exceptions=True)


async def test_status_writes_of_a_cut_off_host_are_fenced(fleet: Fleet) -> None:
    machine = await fleet.create("fra")
    await fleet.wait(machine["id"], "started")
    await fleet.cut_off("h3")
    fleet.drivers["h3"].exit(machine["id"], 0)
    # Its supervisor still runs and sees the exit, but the store refuses the write.
    supervisor = fleet.agents["h3"]._supervisors[machine["id"]]
    await fleet.drivers["h3"].until(lambda: machine["id"] not in fleet.drivers["h3"].running)
    # Nothing signals the supervisor's in-memory transition; it follows within a few steps.
    while supervisor._last_write is None or supervisor.view().state != "stopped":  # noqa: ASYNC110
        await asyncio.sleep(0)
    await supervisor._last_write
    assert (await fleet.machines.get("web", machine["id"]))["state"] == "started"
    await fleet.agents["h3"].restore()
    await fleet.wait(machine["id"], "stopped")


async def test_one_leader_at_a_time(fleet: Fleet) -> None:
    events: list[str] = []
    first_leads = asyncio.Event()

    async def lead_as(name: str) -> None:
        events.append(f"{name} leads")
        if name == "a":
            first_leads.set()
        await asyncio.Event().wait()

    a = Election(fleet.store, "/controller", "a", ttl=30)
    b = Election(fleet.store, "/controller", "b", ttl=30)
    task_a = asyncio.create_task(a.run(lambda: lead_as("a")))
    await first_leads.wait()
    task_b = asyncio.create_task(b.run(lambda: lead_as("b")))
    try:
        await asyncio.sleep(0.05)
        assert events == ["a leads"] and not b.leading.is_set()
        task_a.cancel()
        await asyncio.gather(task_a, return_exceptions=True)
        await asyncio.wait_for(b.leading.wait(), 5)
        assert events == ["a leads", "b leads"]
    finally:
        task_a.cancel()
        task_b.cancel()
        await asyncio.gather(task_a, task_b, return_exceptions=True)


async def test_a_rebooted_host_records_its_replaced_machine_stopped(fleet: Fleet) -> None:
    watched = await fleet.create("fra")
    await fleet.wait(watched["id"], "started")
    standby = await fleet.create("ams", standbys=[watched["id"]])
    controller = asyncio.create_task(Failover(fleet.store).run())
    try:
        await fleet.cut_off("h3")
        await fleet.wait(standby["id"], "started")
    finally:
        controller.cancel()
        await asyncio.gather(controller, return_exceptions=True)
    # The host reboots: its agent and every process on it are gone.
    old = fleet.agents["h3"]
    await old.stop()
    fleet.drivers["h3"].running.clear()
    fleet.agents["h3"] = Agent(old.ctx, alive_ttl=30)
    await fleet.agents["h3"].start()
    await fleet.wait(watched["id"], "stopped")
    assert fleet.drivers["h3"].starts.count(watched["id"]) == 1
