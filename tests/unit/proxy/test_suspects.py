"""Passive health of other hosts: a host whose proxy could not be reached is suspect for a
while; the balancer routes around it unless nothing else can serve; a success, the host
joining again, or time clears it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from roost.proxy.backhaul import Backhaul
from roost.proxy.balancer import pick
from roost.proxy.catalog import Catalog, Machine, Port, Service
from roost.proxy.metrics import ProxyMetrics
from roost.proxy.suspects import SUSPECT_PERIOD, Suspects
from roost.proxy.upstream import ConnectFailed, Pool
from roost.store import SqliteStore
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
from tests.unit.proxy.conftest import World, service


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def machine(
    mid: str,
    host: str,
    region: str = "ams",
    *,
    state: str = "started",
    local: bool = False,
    backhaul: tuple[str, int] = ("10.1.0.2", 4281),
) -> Machine:
    svc = Service(internal_port=8080, protocol="tcp", ports=(Port(80, ("http",)),), soft_limit=2)
    return Machine(
        id=mid,
        app="web",
        region=region,
        state=state,
        address="10.0.0.2",
        cordoned=False,
        services=(svc,),
        healthy=True,
        http=svc,
        host_id=host,
        local=local,
        backhaul=None if local else backhaul,
    )


def http(m: Machine) -> Service | None:
    return m.http_service()


def test_a_suspicion_lasts_its_period_on_the_injected_clock() -> None:
    clock = Clock()
    suspects = Suspects(clock=clock)
    assert not suspects.suspected("b")
    assert suspects.mark("b"), "a new suspicion"
    clock.now += SUSPECT_PERIOD / 2
    assert not suspects.mark("b"), "already suspect: the period starts again"
    clock.now += SUSPECT_PERIOD - 0.01
    assert suspects.suspected("b") and not suspects.suspected("c")
    clock.now += 0.02
    assert not suspects.suspected("b")
    assert suspects.mark("b") and suspects.clear("b") and not suspects.suspected("b")
    assert not suspects.clear("b")


def test_the_balancer_prefers_hosts_that_are_not_suspect() -> None:
    near, far = machine("near", "b", "ams"), machine("far", "c", "syd")
    asked: list[str] = []

    def suspected(host: str) -> bool:
        asked.append(host)
        return host == "b"

    verdict = pick([near, far], http, {}, region="ams", suspected=suspected)
    assert verdict.choice is not None and verdict.choice.machine.id == "far"
    assert not verdict.choice.suspect
    # Even over its soft limit, a machine elsewhere beats one on a suspect host.
    verdict = pick([near, far], http, {"far": 5}, region="ams", suspected=suspected)
    assert verdict.choice is not None and verdict.choice.machine.id == "far"
    assert verdict.choice.band == "over_soft"
    # Machines of this host are never in doubt, nor asked about.
    asked.clear()
    here = machine("here", "a", "syd", local=True)
    verdict = pick([near, here], http, {}, region="ams", suspected=suspected)
    assert verdict.choice is not None and verdict.choice.machine.id == "here"
    assert asked == ["b"]


def test_suspect_hosts_serve_when_nothing_else_can() -> None:
    near, far = machine("near", "b", "ams"), machine("far", "c", "syd")

    def suspected(host: str) -> bool:
        return True

    verdict = pick([near, far], http, {}, region="ams", suspected=suspected)
    assert verdict.choice is not None and verdict.choice.machine.id == "near"
    assert verdict.choice.suspect and "suspect" in verdict.choice.reason
    # Stopped machines on suspect hosts are woken last.
    stopped = [
        machine("s-near", "b", "ams", state="stopped"),
        machine("s-far", "c", "syd", state="stopped"),
    ]
    verdict = pick(
        stopped, http, {}, region="ams", suspected=lambda host: host == "b", rng=random.Random(1)
    )
    assert [m.id for m in verdict.startable] == ["s-far", "s-near"]


# -- with a catalog of a fleet ----------------------------------------------------------


@dataclass
class Fleet:
    store: SqliteStore
    catalog: Catalog
    clock: Clock

    async def host(self, host: str, epoch: str = "1") -> None:
        await self.store.put(host_key(host), HostRecord(id=host, region="ams").to_json())
        await self.store.put(alive_key(host), epoch)
        record = ProxyRecord(host, "127.0.0.1:1", "ams")
        await self.store.put(proxy_key(host), record.to_json())

    async def remote_machine(self, host: str, *services: dict[str, object]) -> str:
        mid = f"m-{host}"
        record = MachineRecord(
            id=mid,
            app="web",
            name=mid,
            region="here",
            host_id=host,
            config={"image": "x/y", "services": list(services)},
            version="v1",
            desired="started",
            ipv4="10.0.0.2",
        )
        await self.store.put(machine_key("web", mid), record.to_json())
        status = MachineStatus(state="started", version="v1", host_id=host)
        await self.store.put(status_key("web", mid), status.to_json())
        await self.settle()
        return mid

    async def settle(self) -> None:
        revision = (await self.store.range("/apps/")).revision
        while self.catalog.applied < revision:
            await self.catalog.changed(self.catalog.version)


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    store = SqliteStore(":memory:")
    await store.start()
    await store.put(app_key("web"), App(name="web", id="web").to_json())
    clock = Clock()
    catalog = Catalog(store, host_id="a", suspects=Suspects(clock=clock))
    await catalog.start()
    world = Fleet(store, catalog, clock)
    await world.host("a")
    await world.host("b")
    await world.settle()
    yield world
    await catalog.stop()
    await store.close()


async def test_the_host_joining_again_clears_its_suspicion(fleet: Fleet) -> None:
    suspects = fleet.catalog.suspects
    suspects.mark("b")
    # The same epoch again (a listing replays it) says nothing new.
    await fleet.store.put(alive_key("b"), "1")
    await fleet.settle()
    assert suspects.suspected("b")
    # Its lease ran out and it joined again, under a new epoch.
    await fleet.store.delete(alive_key("b"))
    await fleet.settle()
    assert suspects.suspected("b")
    await fleet.store.put(alive_key("b"), "2")
    await fleet.settle()
    assert not suspects.suspected("b")


async def test_the_router_serves_from_a_suspect_host_and_wakes_a_machine_elsewhere(
    fleet: Fleet,
) -> None:
    world = World(fleet.store, fleet.catalog)
    remote = await fleet.remote_machine("b", service())
    # World's machines are on an unregistered host: this one; farther than b's here.
    here = await world.machine("web", service(), state="stopped", region="there")
    fleet.catalog.suspects.mark("b")
    lease = await world.router.acquire("web", http)
    assert lease.machine.id == remote and lease.choice.suspect
    lease.release()
    await asyncio.wait_for(world.router._wakes["web"], 5)
    assert world.control.starts == [here]
    await world.settle()
    lease = await world.router.acquire("web", http)
    assert lease.machine.id == here
    lease.release()
    # Time passes: the host is trusted again, and nearest first.
    fleet.clock.now += SUSPECT_PERIOD
    lease = await world.router.acquire("web", http)
    assert lease.machine.id == remote and not lease.choice.suspect
    lease.release()


# -- the backhaul marks and clears ------------------------------------------------------


class Answer(asyncio.Protocol):
    """A host's proxy that answers every request 503 (the machine is not started)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")


async def test_failed_connects_mark_the_host_and_answers_clear_it(fleet: Fleet) -> None:
    suspects, metrics = fleet.catalog.suspects, ProxyMetrics()
    pool = Pool()
    backhaul = Backhaul(fleet.store, "a", "ams", pool, suspects=suspects, metrics=metrics)
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    try:
        # Nothing listens there any more: refused.
        dead = machine("m-b", "b", backhaul=("127.0.0.1", port))
        assert not await backhaul.probe(dead, 8080)
        assert suspects.suspected("b") and metrics.backhaul_suspects["b"] == 1
        backhaul.unreachable(dead, ConnectFailed("timed out"))
        assert metrics.backhaul_suspects["b"] == 1, "one suspicion, however many failures"
        assert 'roost_proxy_backhaul_suspect_total{host="b"} 1' in metrics.render()

        # Its proxy answers (not ready, but it answers): trusted again at once.
        server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
        alive = machine("m-b", "b", backhaul=("127.0.0.1", server.sockets[0].getsockname()[1]))
        assert not await backhaul.probe(alive, 8080)
        assert not suspects.suspected("b")
        backhaul.unreachable(alive, ConnectFailed("refused"))
        assert metrics.backhaul_suspects["b"] == 2
        backhaul.reached(alive)
        assert not suspects.suspected("b")
    finally:
        server.close()
        pool.close()
