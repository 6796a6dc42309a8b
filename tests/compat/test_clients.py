"""The request sequences published Fly Machines clients send, against a real server.

Each flow is what one kind of client was recorded doing (SDKs, sandbox providers, job
runners): their region codes, their bodies and headers (a JSON Content-Type on every
request, ``name: null``, ``stop`` with ``{}``, ``PUT`` updates, ``?kill=``, lease
``?ttl=`` without a body, ``include_deleted=`` with no value), their waits by
``instance_id``, and their back-to-back calls. Every answer is checked against Fly's
own OpenAPI document, and events are parsed with a strict model of Fly's event.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict

from tests.compat.official import OfficialSpec
from tests.fixtures.platform import RoostServer

pytestmark = pytest.mark.root

SPEC = OfficialSpec()


class ExitEvent(BaseModel):
    exit_code: int
    oom_killed: bool
    requested_stop: bool


class EventRequest(BaseModel):
    # What typed SDKs require whenever ``request`` is there.
    exit_event: ExitEvent
    restart_count: int


class MachineEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    type: str
    status: str
    source: str
    timestamp: int
    request: EventRequest | None = None


class Wire:
    """One client's way of calling, with every answer checked against Fly's document."""

    def __init__(self, server: RoostServer, *, user_agent: str) -> None:
        self.http = httpx.Client(
            base_url=server.url,
            timeout=70,
            headers={
                "Authorization": f"Bearer {server.token}",
                "User-Agent": user_agent,
                # Several SDKs send it on every request, GET and DELETE included.
                "Content-Type": "application/json",
            },
        )

    def __call__(
        self,
        method: str,
        path: str,
        *,
        expect: int = 200,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        response = self.http.request(method, path, json=json, params=params, headers=headers)
        body = response.json() if response.content else None
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {body}"
        SPEC.check(method, path, response.status_code, body)
        return body

    def events(self, app: str, mid: str) -> list[MachineEvent]:
        return [MachineEvent.model_validate(e) for e in self("GET", _m(app, mid) + "/events")]

    def close(self) -> None:
        self.http.close()


def _m(app: str, mid: str = "") -> str:
    return f"/v1/apps/{app}/machines" + (f"/{mid}" if mid else "")


@pytest.fixture
def wire(roost: RoostServer) -> Any:
    clients: list[Wire] = []

    def make(user_agent: str) -> Wire:
        clients.append(Wire(roost, user_agent=user_agent))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def new_app(call: Wire, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    assert call("GET", f"/v1/apps/{name}", expect=404) == {"error": "app not found"}
    # Older clients say app_name, and send the network.
    created = call(
        "POST",
        "/v1/apps",
        json={"app_name": name, "org_slug": "personal", "network": "default"},
        expect=201,
    )
    assert created["id"]
    return name


def test_sdk_lifecycle_with_fly_region_codes(wire: Any, demo_images: dict[str, str]) -> None:
    call = wire("node-fetch/1.0")
    app = new_app(call, "sdk")
    listed = call("GET", "/v1/apps", params={"org_slug": "personal"})
    assert app in [a["name"] for a in listed["apps"]]
    machine = call(
        "POST",
        _m(app),
        json={
            "name": None,
            "region": "iad",
            "config": {
                "image": demo_images["roost/hello"],
                "env": {"A": "1"},
                "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
                "metadata": {"role": "web"},
                "init": {},
            },
        },
    )
    mid, version = machine["id"], machine["instance_id"]
    assert machine["region"] == "test", "placed on the one region there is"
    assert machine["image_ref"]["repository"] == "roost/hello"
    call("GET", _m(app, mid) + "/wait", params={"instance_id": version, "state": "started"})
    call("GET", _m(app), params={"region": "iad", "include_deleted": ""})
    across = call("GET", "/v1/orgs/personal/machines", params={"limit": 1000})
    assert mid in [m["id"] for m in across["machines"]]
    regions = call("GET", "/v1/platform/regions")
    assert regions["nearest"] == "test"
    assert [m["id"] for m in call("GET", _m(app), params={"metadata.role": "web"})] == [mid]

    call("POST", _m(app, mid) + "/stop", json={"signal": "SIGTERM", "timeout": "5s"})
    waited = call(
        "GET", _m(app, mid) + "/wait", params={"instance_id": version, "state": "stopped"}
    )
    assert waited["state"] == "stopped"
    exits = [e for e in call.events(app, mid) if e.type == "exit"]
    assert exits and exits[0].request and exits[0].request.exit_event.requested_stop
    assert all(e.request is None for e in call.events(app, mid) if e.type != "exit")

    started = call("POST", _m(app, mid) + "/start", json={})
    assert started["previous_state"] == "stopped"
    call("GET", _m(app, mid) + "/wait", params={"state": "started", "timeout": "30"})

    current = call("GET", _m(app, mid))
    config = {**current["config"], "env": {"A": "2"}}
    updated = call("POST", _m(app, mid), json={"config": config, "region": "iad"})
    assert updated["version"] != version
    call("GET", _m(app, mid) + "/wait", params={"version": updated["version"], "state": "started"})
    versions = call("GET", _m(app, mid) + "/versions")
    assert versions[0]["version"] == updated["version"]

    # flyctl's lease dance: ?ttl= with no body, the nonce on every change, then release.
    lease = call("POST", _m(app, mid) + "/lease", params={"ttl": 120}, expect=201)
    nonce = lease["data"]["nonce"]
    call("POST", _m(app, mid) + "/cordon", expect=409)
    call("POST", _m(app, mid) + "/cordon", headers={"fly-machine-lease-nonce": nonce})
    call("POST", _m(app, mid) + "/uncordon", headers={"fly-machine-lease-nonce": nonce})
    call("DELETE", _m(app, mid) + "/lease", headers={"fly-machine-lease-nonce": nonce})

    call("POST", _m(app, mid) + "/restart", params={"timeout": "5s", "force_stop": "false"})
    call("POST", _m(app, mid) + "/signal", json={"signal": 1})
    call("PATCH", _m(app, mid) + "/metadata", json={"metadata": {"tier": "gold"}}, expect=204)
    assert call("GET", _m(app, mid) + "/metadata/tier") == {"value": "gold"}

    call("DELETE", _m(app, mid), params={"kill": "true"})
    call("GET", _m(app, mid) + "/wait", params={"state": "destroyed"})
    gone = call("GET", _m(app), params={"include_deleted": "true"})
    assert [m["state"] for m in gone if m["id"] == mid] == ["destroyed"]
    call("DELETE", f"/v1/apps/{app}", expect=202)


def test_job_runner_reads_the_exit_code(wire: Any, demo_images: dict[str, str]) -> None:
    call = wire("python-httpx/0.28.1")
    app = new_app(call, "jobs")
    machine = call(
        "POST",
        _m(app),
        json={
            "region": "iad",
            "config": {
                "image": demo_images["roost/busybox"],
                "init": {"exec": ["/bin/sh", "-c", "echo done; exit 3"]},
                "guest": {"cpu_kind": "performance", "cpus": 1, "memory_mb": 512},
                "auto_destroy": True,
                "restart": {"policy": "no"},
                "metadata": {"managed_by": "runner"},
            },
        },
    )
    mid = machine["id"]
    state = call("GET", _m(app, mid) + "/wait", params={"state": "stopped"})["state"]
    # auto_destroy may already have taken it further.
    assert state in ("stopped", "destroyed")
    call("GET", _m(app, mid) + "/wait", params={"state": "destroyed"})
    exits = [e for e in call.events(app, mid) if e.type == "exit"]
    assert exits[0].request and exits[0].request.exit_event.exit_code == 3
    assert exits[0].source == "flyd"
    # A runner's cleanup after the machine is gone: nothing to stop, destroy is a no-op.
    call("POST", _m(app, mid) + "/stop", expect=404)
    call("DELETE", _m(app, mid), params={"force": "true"})


def test_sandbox_provider_flow(wire: Any, demo_images: dict[str, str]) -> None:
    call = wire("aiohttp/3.10")
    app = new_app(call, "sandbox")
    machine = call(
        "POST",
        _m(app),
        json={
            "name": f"sandbox_{uuid.uuid4().hex[:12]}",
            "region": "lhr",
            "config": {
                "image": demo_images["roost/busybox"],
                "init": {"exec": ["/bin/sleep", "3600"]},
                "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
                "auto_destroy": True,
                "restart": {"policy": "no"},
                # Keys Fly ignores, sent by real sandbox clients.
                "auto_start_machines": True,
                "stop_timeout": "60s",
            },
        },
    )
    mid = machine["id"]
    call("GET", _m(app, mid) + "/wait", params={"state": "started", "timeout": 60})
    ran = call("POST", _m(app, mid) + "/exec", json={"command": ["sh", "-c", "echo hi"]})
    assert (ran["exit_code"], ran["stdout"]) == (0, "hi\n")
    ran = call("POST", _m(app, mid) + "/exec", json={"cmd": "echo there", "timeout": 30})
    assert ran["stdout"] == "there\n"
    call("POST", _m(app, mid) + "/suspend", json={})
    call("GET", _m(app, mid) + "/wait", params={"state": "stopped,suspended"})
    call("POST", _m(app, mid) + "/start", json={})
    call("GET", _m(app, mid) + "/wait", params={"state": "started"})
    # Stop, then destroy at once without force: the destroy waits for the stop.
    call("POST", _m(app, mid) + "/stop")
    call("DELETE", _m(app, mid))
    call("GET", _m(app, mid) + "/wait", params={"state": "destroyed"})


def test_update_then_start_at_once(wire: Any, demo_images: dict[str, str]) -> None:
    call = wire("python-httpx/0.28.1")
    app = new_app(call, "turns")
    config = {"image": demo_images["roost/busybox"], "init": {"exec": ["/bin/sleep", "3600"]}}
    machine = call("POST", _m(app), json={"region": "iad", "config": config})
    mid = machine["id"]
    call("GET", _m(app, mid) + "/wait", params={"state": "started"})
    for turn in range(3):
        call("POST", _m(app, mid) + "/stop")
        call("GET", _m(app, mid) + "/wait", params={"state": "stopped"})
        updated = {**config, "env": {"TURN": str(turn)}}
        call("PUT", _m(app, mid), json={"region": "iad", "config": updated})
        call("POST", _m(app, mid) + "/start")
        call("GET", _m(app, mid) + "/wait", params={"state": "started"})
    call("DELETE", _m(app, mid), params={"force": "true"})


def test_volumes_with_fly_region_codes(wire: Any) -> None:
    call = wire("node-fetch/1.0")
    app = new_app(call, "vols")
    volume = call(
        "POST", f"/v1/apps/{app}/volumes", json={"name": "data", "region": "iad", "size_gb": 1}
    )
    vid = volume["id"]
    assert volume["region"] == "test" and volume["attached_machine_id"] is None
    assert [v["id"] for v in call("GET", f"/v1/apps/{app}/volumes")] == [vid]
    call("GET", f"/v1/apps/{app}/volumes/{vid}")
    extended = call("PUT", f"/v1/apps/{app}/volumes/{vid}/extend", json={"size_gb": 2})
    assert extended["volume"]["size_gb"] == 2
    call("GET", f"/v1/apps/{app}/volumes/{vid}/snapshots")
    call("DELETE", f"/v1/apps/{app}/volumes/{vid}")
