"""The agent killed at every journal step of every run, then restarted: each machine
settles in the state it was asked for, with exactly what that state runs.

``ROOST_CRASH_AT`` (``roost.agent.crashpoints``) makes the server SIGKILL itself at one
named point; the points are derived from the supervisor's plans, so a new step is
covered as soon as it exists. After the restart (no crash point) the machine must reach
the requested state by itself, its record must say so with no transient state left,
and the host must hold one container and one shim for a running machine, none for a
stopped one, and nothing at all (container, shim, network namespace, machine
directory) for a destroyed one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from roost.agent.crashpoints import ENV
from roost.agent.supervisor import PLANS
from roost.spec.states import TRANSIENT
from tests.fixtures.platform import RoostServer, new_server
from tests.integration.platform.helpers import (
    create,
    destroy,
    get,
    http_get,
    ipv4,
    new_app,
    wait,
)

pytestmark = pytest.mark.root

OPERATIONS = {"start": "create", "restart": "restart", "stop": "stop", "destroy": "destroy"}
"""The API call that makes the agent run each plan."""
SETTLED = {"start": "started", "restart": "started", "stop": "stopped", "destroy": "destroyed"}


def crash_points(plan: str) -> list[str]:
    points = [f"{plan}:begun"]
    for step in PLANS[plan]:
        points += [f"{plan}:{step}", f"{plan}:{step}:journalled"]
    return [*points, f"{plan}:finished"]


CASES = [(plan, point) for plan in OPERATIONS for point in crash_points(plan)]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, unreachable_routes: None, demo_images: dict[str, str]
) -> Iterator[RoostServer]:
    server = new_server(tmp_path_factory.mktemp("chaos"))
    try:
        yield server
    finally:
        server.cleanup()


def test_every_plan_has_crash_points() -> None:
    assert set(OPERATIONS) == set(PLANS) - {"settle"}


@pytest.mark.parametrize(("plan", "point"), CASES, ids=[point for _, point in CASES])
def test_a_crash_at_each_journal_step_converges(
    server: RoostServer, demo_images: dict[str, str], plan: str, point: str
) -> None:
    server.env = {ENV: point}
    server.start()
    try:
        _crash_and_recover(server, demo_images, plan, point)
    finally:
        server.kill()


def _crash_and_recover(
    server: RoostServer, demo_images: dict[str, str], plan: str, point: str
) -> None:
    c = server.client()
    app = new_app(c, "chaos")
    config = {"image": demo_images["roost/hello"]}
    if plan == "start":
        machine = create(c, app, config)
        before = None
    else:
        machine = create(c, app, config)
        wait(c, app, machine["id"], "started")
        before = server.container_pid(machine["id"])
        _operate(c, app, machine["id"], plan)
    mid = machine["id"]

    assert server.proc is not None
    assert server.proc.wait(timeout=60) == -9, f"the server did not crash at {point}"
    server.proc = None
    server.env = {}
    server.start()
    c = server.client()

    wanted = SETTLED[plan]
    if wanted == "destroyed":
        wait(c, app, mid, "destroyed", timeout=60)
    else:
        wait(c, app, mid, wanted, timeout=60)
        record = get(c, app, mid)
        assert record["state"] == wanted, record
    _assert_host_matches(server, c, app, machine, wanted, before)
    if wanted != "destroyed":
        destroy(c, app, mid)


def _operate(c: httpx.Client, app: str, mid: str, plan: str) -> None:
    path = f"/v1/apps/{app}/machines/{mid}"
    try:
        if plan == "destroy":
            r = c.delete(path, params={"force": "true"})
        else:
            r = c.post(f"{path}/{plan}")
    except httpx.TransportError:
        # The agent acts on stored orders only: dying before the answer left, the server
        # had already recorded this one.
        return
    assert r.status_code == 200, r.text


def _assert_host_matches(
    server: RoostServer,
    c: httpx.Client,
    app: str,
    machine: dict[str, Any],
    wanted: str,
    before: int | None,
) -> None:
    mid = machine["id"]
    states = [m["state"] for m in c.get(f"/v1/apps/{app}/machines").json() if m["id"] == mid]
    assert not set(states) & TRANSIENT, states
    containers, shims = server.containers(mid), server.shims(mid)
    if wanted == "started":
        assert [s for s in containers if s == "running"] == ["running"], containers
        assert len(shims) == 1, shims
        pid = server.container_pid(mid)
        if before is not None:
            assert pid != before, "the restart did not replace the process"
        assert "Hello from roost" in http_get(f"http://{ipv4(machine, server)}:8080/").text
    elif wanted == "stopped":
        assert containers == [], containers
        assert shims == [], shims
    else:
        assert containers == [] and shims == []
        assert not (server.machines_dir / mid).exists()
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert mid not in names
