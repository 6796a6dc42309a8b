from __future__ import annotations

import httpx
import pytest

from roost.cli.client import APIError, Client
from roost.cli.wait import Progress, WaitTimeout, wait_for_restart, wait_for_state
from tests.unit.cli.fakes import APP, MACHINE_PATH, MID, FakeAPI, machine

TIMEOUT_408 = (408, {"error": "deadline_exceeded: machine failed to reach desired state"})


class Clock:
    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def client(api: FakeAPI) -> Client:
    return Client("http://roost.test", "t0k", transport=httpx.MockTransport(api.handle))


def test_loops_over_408_until_the_state_is_reached(api: FakeAPI, client: Client) -> None:
    api.on("GET", f"{MACHINE_PATH}/wait", TIMEOUT_408, TIMEOUT_408, (200, {"state": "started"}))
    api.on("GET", MACHINE_PATH, (200, machine(state="starting")))
    state = wait_for_state(
        client, APP, MID, states=("started",), version="V2", progress=Progress("Waiting")
    )
    assert state == "started"
    waits = api.to("GET", f"{MACHINE_PATH}/wait")
    assert len(waits) == 3
    assert waits[0].params == {"state": ["started"], "timeout": ["5"], "version": ["V2"]}


def test_gives_up_at_the_deadline(api: FakeAPI, client: Client) -> None:
    api.on("GET", f"{MACHINE_PATH}/wait", TIMEOUT_408)
    api.on("GET", MACHINE_PATH, (200, machine(state="stopped")))
    with pytest.raises(WaitTimeout, match=r"did not reach started within 12s \(it is stopped\)"):
        wait_for_state(
            client,
            APP,
            MID,
            states=("started",),
            timeout=12,
            progress=Progress("Waiting"),
            clock=Clock(step=3),
        )
    # The last round asks for no more than what is left.
    assert [c.params["timeout"] for c in api.to("GET", f"{MACHINE_PATH}/wait")] == [
        ["5"],
        ["5"],
        ["3"],
    ]


def test_other_errors_end_the_wait(api: FakeAPI, client: Client) -> None:
    api.on("GET", f"{MACHINE_PATH}/wait", (404, {"error": "machine not found"}))
    with pytest.raises(APIError, match="machine not found"):
        wait_for_state(client, APP, MID, states=("started",), progress=Progress("Waiting"))


def event(event_id: str, kind: str, status: str) -> dict[str, object]:
    return {"id": event_id, "type": kind, "status": status, "source": "user", "timestamp": 1}


def test_restart_waits_for_a_fresh_start_event(api: FakeAPI, client: Client) -> None:
    old_start = event("01A", "start", "started")
    api.on(
        "GET",
        f"{MACHINE_PATH}/events",
        (200, [old_start]),
        (200, [event("01B", "restart", "restarting"), old_start]),
        (200, [event("01C", "start", "started"), event("01B", "restart", "restarting")]),
    )
    naps: list[float] = []
    state = wait_for_restart(
        client, APP, MID, after_event="01A", progress=Progress("Waiting"), sleep=naps.append
    )
    assert state == "started"
    assert len(naps) == 2


def test_restart_reports_failure(api: FakeAPI, client: Client) -> None:
    api.on("GET", f"{MACHINE_PATH}/events", (200, [event("01B", "restart", "failed")]))
    state = wait_for_restart(
        client, APP, MID, after_event="01A", progress=Progress("Waiting"), sleep=lambda _: None
    )
    assert state == "failed"


def test_restart_gives_up_at_the_deadline(api: FakeAPI, client: Client) -> None:
    api.on("GET", f"{MACHINE_PATH}/events", (200, []))
    with pytest.raises(WaitTimeout, match="did not restart within 2s"):
        wait_for_restart(
            client,
            APP,
            MID,
            after_event="01A",
            timeout=2,
            progress=Progress("Waiting"),
            clock=Clock(step=1),
            sleep=lambda _: None,
        )
