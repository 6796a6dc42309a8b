"""Fly's autostop rule, one pass at a time (no clock: passes are called directly)."""

from __future__ import annotations

import asyncio

from roost.proxy.autostop import Autostopper
from tests.unit.proxy.conftest import World, service


def stopper(world: World) -> Autostopper:
    return Autostopper(world.catalog, world.router, "here", drain_timeout=2)


async def test_one_excess_machine_per_region_per_pass(world: World) -> None:
    app = await world.app("web")
    here = [await world.machine(app, service(autostop="stop")) for _ in range(3)]
    there = [await world.machine(app, service(autostop=True), region="there") for _ in range(2)]
    world.router.load.update({here[0]: 3, here[1]: 1})
    chosen = stopper(world).choose(app)
    assert sorted(m.id for m in chosen) == sorted([here[2], min(there)])
    stopped = await stopper(world).pass_once()
    assert sorted(stopped) == sorted([here[2], min(there)])
    await world.settle()
    # Next pass: here has two machines and no load over soft: one more goes; there has
    # one idle machine left: it goes too.
    world.router.load.clear()
    assert len(stopper(world).choose(app)) == 2


async def test_busy_regions_keep_their_machines(world: World) -> None:
    app = await world.app("web")
    a = await world.machine(app, service(soft=1, autostop="stop"))
    b = await world.machine(app, service(soft=1, autostop="stop"))
    world.router.load.update({a: 2, b: 2})
    assert stopper(world).choose(app) == []
    # One machine over its soft limit needs the other as spare capacity.
    world.router.load.update({a: 2, b: 0})
    assert stopper(world).choose(app) == []
    world.router.load.update({a: 1, b: 0})
    assert [m.id for m in stopper(world).choose(app)] == [b]


async def test_a_lone_machine_stops_only_when_idle(world: World) -> None:
    app = await world.app("web")
    lone = await world.machine(app, service(autostop="suspend"))
    world.router.load[lone] = 1
    assert stopper(world).choose(app) == []
    world.router.load.pop(lone)
    assert await stopper(world).pass_once() == [lone]
    assert world.control.stops == [(lone, True)]


async def test_min_machines_running_in_the_primary_region_only(world: World) -> None:
    app = await world.app("web")
    env = {"PRIMARY_REGION": "here"}
    primary = [
        await world.machine(app, service(autostop="stop", minimum=2), env=env) for _ in range(2)
    ]
    elsewhere = await world.machine(
        app, service(autostop="stop", minimum=2), region="there", env=env
    )
    assert [m.id for m in stopper(world).choose(app)] == [elsewhere]
    assert all(p not in [m.id for m in stopper(world).choose(app)] for p in primary)


async def test_autostop_off_is_left_alone(world: World) -> None:
    app = await world.app("web")
    await world.machine(app, service(autostop=False))
    await world.machine(app, service(autostop="off"))
    assert stopper(world).choose(app) == []


async def test_a_machine_picked_for_stopping_drains_first(world: World) -> None:
    app = await world.app("web")
    mid = await world.machine(app, service(autostop="stop"))
    lease = await world.router.acquire(app, lambda m: m.http_service())
    world.router.load[mid] = 1
    task = asyncio.ensure_future(stopper(world)._stop(world.catalog.machine(app, mid)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert mid in world.router.draining and world.control.stops == []
    lease.release()
    assert await asyncio.wait_for(task, 5)
    assert world.control.stops == [(mid, False)]
