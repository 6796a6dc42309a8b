"""A client's random lifecycle calls while ``roost server`` is SIGKILLed again and again.

After the last restart every machine must settle (no transient state left), no machine
the API accepted may be lost, and the host must run exactly what the records say: one
container and one shim per started machine, none for any other. ``CHAOS_ROUNDS`` and
``CHAOS_SEED`` repeat or replay a run (the seed is printed on failure).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from roost.spec.states import TRANSIENT
from tests.fixtures.platform import RoostServer, new_server
from tests.integration.platform.helpers import destroy, new_app, until

pytestmark = pytest.mark.root

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "4"))
MACHINES = 4


@pytest.fixture
def server(
    tmp_path_factory: pytest.TempPathFactory, unreachable_routes: None, demo_images: dict[str, str]
) -> Iterator[RoostServer]:
    server = new_server(tmp_path_factory.mktemp("chaos-kills"))
    try:
        yield server
    finally:
        server.cleanup()


def test_random_calls_through_server_kills_lose_nothing(
    server: RoostServer, demo_images: dict[str, str]
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    config = {"image": demo_images["roost/hello"]}
    server.start()
    app = new_app(server.client(), "kills")
    accepted: set[str] = set()
    destroyed: set[str] = set()
    for _ in range(ROUNDS):
        client = _Client(server, app, config, rng.random(), accepted, destroyed)
        worker = threading.Thread(target=client.run)
        worker.start()
        # The crash instant is the random part: sleeping here is the point.
        client.stopped.wait(rng.uniform(0.3, 2.5))
        server.kill()
        client.stopped.set()
        worker.join()
        assert not client.errors, f"seed {seed}: {client.errors}"
        server.start()

    c = server.client()
    mismatches: list[str] = []

    def settled() -> bool:
        mismatches[:] = _mismatches(server, c, app)
        return not mismatches

    try:
        until(settled, timeout=90)
    except AssertionError:
        pytest.fail(f"not settled (seed {seed}): {mismatches}")
    machines = {m["id"] for m in c.get(f"/v1/apps/{app}/machines").json()}
    assert accepted - destroyed <= machines, f"lost machines (seed {seed})"
    for mid in machines:
        destroy(c, app, mid)


def _mismatches(server: RoostServer, c: httpx.Client, app: str) -> list[str]:
    """Machines in a transient state, or whose host side differs from their record."""
    try:
        machines = c.get(f"/v1/apps/{app}/machines").json()
    except httpx.TransportError as exc:
        return [f"API: {exc}"]
    found = []
    for machine in machines:
        mid, state = machine["id"], machine["state"]
        containers, shims = server.containers(mid), server.shims(mid)
        if state in TRANSIENT:
            found.append(f"{mid} is {state}")
        elif state == "started" and (containers != ["running"] or len(shims) != 1):
            found.append(f"{mid} started with containers {containers}, shims {shims}")
        elif state != "started" and (containers or shims):
            found.append(f"{mid} {state} with containers {containers}, shims {shims}")
    return found


class _Client:
    """Random creates, starts, stops, restarts, updates and destroys until stopped."""

    def __init__(
        self,
        server: RoostServer,
        app: str,
        config: dict[str, Any],
        seed: float,
        accepted: set[str],
        destroyed: set[str],
    ) -> None:
        self.c = server.client(timeout=5)
        self.app = app
        self.config = config
        self.rng = random.Random(seed)
        self.accepted = accepted
        self.destroyed = destroyed
        self.stopped = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self._one()
            except httpx.TransportError:
                continue  # the server is down or died mid-call

    def _one(self) -> None:
        live = sorted(self.accepted - self.destroyed)
        base = f"/v1/apps/{self.app}/machines"
        if not live or (len(live) < MACHINES and self.rng.random() < 0.5):
            r = self.c.post(base, json={"config": self.config})
            if r.status_code == 200:
                self.accepted.add(r.json()["id"])
            return
        mid = self.rng.choice(live)
        action = self.rng.choice(["start", "stop", "restart", "update", "destroy"])
        if action == "destroy":
            r = self.c.delete(f"{base}/{mid}", params={"force": "true"})
            if r.status_code == 200:
                self.destroyed.add(mid)
        elif action == "update":
            config = {**self.config, "env": {"N": str(self.rng.randrange(1000))}}
            r = self.c.post(f"{base}/{mid}", json={"config": config})
        else:
            r = self.c.post(f"{base}/{mid}/{action}")
        # Conflicts (stopping a stopped machine, a busy one) are fine; server errors not.
        if r.status_code >= 500:
            self.errors.append(f"{action} {mid}: {r.status_code} {r.text}")
