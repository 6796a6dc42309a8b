"""Choosing machines: bands, regions, load, health; and the router around it."""

from __future__ import annotations

import asyncio
import random

import pytest

from roost.proxy.balancer import pick
from roost.proxy.catalog import Machine, Service
from roost.proxy.replay import parse_replay
from roost.proxy.router import NoCapacity
from tests.unit.proxy.conftest import World, service


def http(machine: Machine) -> Service | None:
    return machine.http_service()


async def test_below_soft_then_region_then_least_loaded(world: World) -> None:
    app = await world.app("web")
    near = await world.machine(app, service(soft=2, hard=4))
    far = await world.machine(app, service(soft=2, hard=4), region="there")
    machines = world.catalog.machines(app)
    assert pick(machines, http, {}, region="here").choice.machine.id == near  # type: ignore[union-attr]
    # Soft limits never push traffic to another region while a local machine has room
    # under its hard limit... unless the far one is below soft and the near one is not.
    verdict = pick(machines, http, {near: 2}, region="here")
    assert verdict.choice is not None and verdict.choice.machine.id == far
    verdict = pick(machines, http, {near: 2, far: 2}, region="here")
    assert verdict.choice is not None and verdict.choice.machine.id == near
    assert verdict.choice.band == "over_soft"
    verdict = pick(machines, http, {near: 4, far: 4}, region="here")
    assert verdict.choice is None and verdict.saturated


async def test_least_in_flight_with_random_ties(world: World) -> None:
    app = await world.app("web")
    a = await world.machine(app, service(soft=10))
    b = await world.machine(app, service(soft=10))
    machines = world.catalog.machines(app)
    assert pick(machines, http, {a: 3, b: 1}, region="here").choice.machine.id == b  # type: ignore[union-attr]
    seen = {
        pick(machines, http, {}, region="here", rng=random.Random(seed)).choice.machine.id  # type: ignore[union-attr]
        for seed in range(20)
    }
    assert seen == {a, b}


async def test_excluded_machines(world: World) -> None:
    app = await world.app("web")
    await world.machine(app, service(), cordoned=True)
    await world.machine(
        app, service(), checks=[{"name": "servicecheck-00-http-8080", "status": "critical"}]
    )
    top_check_failing = await world.machine(
        app, service(), checks=[{"name": "top", "status": "critical"}]
    )
    drained = await world.machine(app, service())
    stopped = await world.machine(app, service(), state="stopped")
    no_autostart = await world.machine(app, service(autostart=False), state="stopped")
    machines = world.catalog.machines(app)
    verdict = pick(machines, http, {}, region="here", draining=frozenset({drained}))
    # Top-level checks do not steer routing; only that machine qualifies.
    assert verdict.choice is not None and verdict.choice.machine.id == top_check_failing
    assert [m.id for m in verdict.startable] == [stopped]
    assert no_autostart not in [m.id for m in verdict.startable]


async def test_cold_requests_start_one_machine(world: World) -> None:
    app = await world.app("web")
    first = await world.machine(app, service(), state="stopped")
    await world.machine(app, service(), state="stopped")
    leases = await asyncio.gather(*(world.router.acquire(app, http) for _ in range(20)))
    assert world.control.starts == [first]
    assert {lease.machine.id for lease in leases} == {first}
    assert world.router.load[first] == 20
    for lease in leases:
        lease.release()
    assert first not in world.router.load
    assert world.metrics.wake_latency[app].count == 1


async def test_over_soft_serves_now_and_wakes_another(world: World) -> None:
    app = await world.app("web")
    busy = await world.machine(app, service(soft=1, hard=5))
    spare = await world.machine(app, service(soft=1, hard=5), state="stopped")
    held = await world.router.acquire(app, http)
    second = await world.router.acquire(app, http)
    assert second.machine.id == busy, "served at once by the machine over its soft limit"
    await asyncio.wait_for(world.router.wait_for_release(), 5)  # the wake-up ended
    assert world.control.starts == [spare]
    await world.settle()
    third = await world.router.acquire(app, http)
    assert third.machine.id == spare
    for lease in (held, second, third):
        lease.release()


async def test_hard_limit_queues_then_refuses(world: World) -> None:
    app = await world.app("web")
    await world.machine(app, service(soft=1, hard=1))
    held = await world.router.acquire(app, http)
    waiting = asyncio.ensure_future(world.router.acquire(app, http))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    held.release()
    got = await asyncio.wait_for(waiting, 1)
    with pytest.raises(NoCapacity, match="hard concurrency limit"):
        await world.router.acquire(app, http)
    got.release()
    assert world.metrics.rejected[app] == 1


async def test_no_machine_says_why(world: World) -> None:
    with pytest.raises(NoCapacity, match="no app named ghost"):
        await world.router.acquire("ghost", http)
    app = await world.app("empty")
    with pytest.raises(NoCapacity, match="no machine with a service"):
        await world.router.acquire(app, http)
    await world.machine(app, service(autostart=False), state="stopped")
    with pytest.raises(NoCapacity, match="none can be started"):
        await world.router.acquire(app, http)


def test_replay_header() -> None:
    replay = parse_replay('region="ams, fra";elsewhere=true;state=abc')
    assert replay.regions == ("ams", "fra") and replay.elsewhere and replay.state == "abc"
    assert parse_replay("instance=0123456789abcd").instance == "0123456789abcd"
    assert parse_replay("garbage").instance is None


async def test_waiting_requests_are_bounded(world: World) -> None:
    app = await world.app("web")
    await world.machine(app, service(soft=1, hard=1))
    world.router.max_waiting = 2
    held = await world.router.acquire(app, http)
    waiters = [asyncio.ensure_future(world.router.acquire(app, http)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(NoCapacity, match="too many requests"):
        await world.router.acquire(app, http)
    held.release()
    first = await asyncio.wait_for(waiters[0], 1)
    first.release()
    (await asyncio.wait_for(waiters[1], 1)).release()
