"""A stateful fake of the Machines API for deploy tests: apps, machines with versions,
leases, waits, checks and volumes, behind an httpx.MockTransport.

Machines come up at once. Their checks pass unless ``unhealthy`` says otherwise for
their config; a wait that would block answers 408 and moves the fake clock on instead,
so a rollout's timeouts run without sleeping.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from roost.cli import rollout

JSON = dict[str, Any]
RUNNING = "started"


@dataclass
class Step:
    """One mutating call, for asserting on the order of a rollout."""

    action: str
    machine_id: str
    version: str = ""


@dataclass
class FakePlatform:
    apps: set[str] = field(default_factory=set)
    machines: dict[str, JSON] = field(default_factory=dict)
    volumes: list[JSON] | None = None
    """``None``: the API has no volumes endpoint (404)."""
    unhealthy: Callable[[JSON], bool] = lambda config: False
    exits: Callable[[JSON], bool] = lambda config: False
    """Configs whose machines stop right after starting."""
    region: str = "ams"
    now: float = 0.0
    steps: list[Step] = field(default_factory=list)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- helpers for tests ------------------------------------------------------------

    def clock(self) -> rollout.Clock:
        return rollout.Clock(now=lambda: self.now, sleep=self.sleep)

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def add(self, app: str, config: JSON, *, state: str = RUNNING, region: str = "") -> JSON:
        """A machine as if an earlier deploy had made it."""
        self.apps.add(app)
        return self._create(app, {"config": config, "region": region or self.region}, state)

    def live(self) -> list[JSON]:
        return [m for m in self.machines.values() if m["state"] != "destroyed"]

    def group(self, name: str) -> list[JSON]:
        return [m for m in self.live() if m["config"]["metadata"]["fly_process_group"] == name]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- the API ----------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        body: Any = json.loads(request.content) if request.content else None
        path = request.url.path
        self.requests.append((request.method, path, body))
        params = dict(request.url.params.multi_items())
        states = request.url.params.get_list("state")
        routes: list[tuple[str, str, Callable[..., tuple[int, Any]]]] = [
            ("GET", r"/v1/apps/([^/]+)", self._get_app),
            ("POST", r"/v1/apps", lambda: self._create_app(body)),
            ("GET", r"/v1/apps/([^/]+)/volumes", self._list_volumes),
            ("GET", r"/v1/apps/([^/]+)/machines", self._list),
            ("POST", r"/v1/apps/([^/]+)/machines", lambda app: self._create_req(app, body)),
            ("GET", r"/v1/apps/([^/]+)/machines/(\w+)", self._get),
            (
                "POST",
                r"/v1/apps/([^/]+)/machines/(\w+)",
                lambda app, mid: self._update(mid, body, request.headers),
            ),
            ("DELETE", r"/v1/apps/([^/]+)/machines/(\w+)", lambda app, mid: self._destroy(mid)),
            ("POST", r"/v1/apps/([^/]+)/machines/(\w+)/lease", self._lease),
            ("DELETE", r"/v1/apps/([^/]+)/machines/(\w+)/lease", self._release),
            (
                "GET",
                r"/v1/apps/([^/]+)/machines/(\w+)/wait",
                lambda app, mid: self._wait(mid, states, params),
            ),
            ("GET", r"/v1/apps/([^/]+)/machines/(\w+)/events", lambda app, mid: (200, [])),
            ("POST", r"/v1/apps/([^/]+)/machines/(\w+)/cordon", self._cordon(True)),
            ("POST", r"/v1/apps/([^/]+)/machines/(\w+)/uncordon", self._cordon(False)),
        ]
        for method, pattern, route in routes:
            match = re.fullmatch(pattern, path)
            if match and method == request.method:
                status, payload = route(*match.groups())
                return httpx.Response(status, json=payload)
        return httpx.Response(404, json={"error": f"unexpected {request.method} {path}"})

    def _get_app(self, app: str) -> tuple[int, Any]:
        if app not in self.apps:
            return 404, {"error": "app not found"}
        count = sum(1 for m in self.live() if m["app"] == app)
        return 200, {
            "name": app,
            "status": "deployed" if count else "pending",
            "organization": {"slug": "personal"},
        }

    def _create_app(self, body: JSON) -> tuple[int, Any]:
        self.apps.add(body["name"])
        return 201, {"id": "x", "created_at": 0}

    def _list_volumes(self, app: str) -> tuple[int, Any]:
        if self.volumes is None:
            return 404, {"detail": "Not Found"}
        return 200, self.volumes

    def _list(self, app: str) -> tuple[int, Any]:
        if app not in self.apps:
            return 404, {"error": "app not found"}
        return 200, [self._view(m) for m in self.live() if m["app"] == app]

    def _create_req(self, app: str, body: JSON) -> tuple[int, Any]:
        machine = self._create(app, body, "created" if body.get("skip_launch") else RUNNING)
        return 200, self._view(machine)

    def _create(self, app: str, body: JSON, state: str) -> JSON:
        mid = f"{next(self._ids):014x}"
        version = self._version()
        machine = {
            "id": mid,
            "app": app,
            "region": body.get("region") or self.region,
            "config": copy.deepcopy(body["config"]),
            "version": version,
            "state": state,
            "cordoned": bool(body.get("skip_service_registration")),
            "lease": None,
            "versions": [version],
        }
        self._boot(machine)
        self.machines[mid] = machine
        self.steps.append(Step("create", mid, version))
        return machine

    def _get(self, app: str, mid: str) -> tuple[int, Any]:
        machine = self.machines.get(mid)
        if machine is None or machine["state"] == "destroyed":
            return 404, {"error": "machine not found"}
        return 200, self._view(machine)

    def _update(self, mid: str, body: JSON, headers: httpx.Headers) -> tuple[int, Any]:
        machine = self.machines[mid]
        if machine["lease"] and headers.get("fly-machine-lease-nonce") != machine["lease"]:
            return 409, {"error": f"aborted: machine ID {mid} lease currently held"}
        if body.get("current_version") not in (None, machine["version"]):
            return 409, {"error": "version conflict"}
        machine["config"] = copy.deepcopy(body["config"])
        machine["version"] = self._version()
        machine["versions"].append(machine["version"])
        if not (body.get("skip_launch") and machine["state"] != RUNNING):
            machine["state"] = RUNNING
        self._boot(machine)
        self.steps.append(Step("update", mid, machine["version"]))
        return 200, self._view(machine)

    def _destroy(self, mid: str) -> tuple[int, Any]:
        self.machines[mid]["state"] = "destroyed"
        self.steps.append(Step("destroy", mid))
        return 200, {"ok": True}

    def _lease(self, app: str, mid: str) -> tuple[int, Any]:
        nonce = f"n{mid}"
        self.machines[mid]["lease"] = nonce
        return 201, {"status": "success", "data": {"nonce": nonce, "expires_at": 0}}

    def _release(self, app: str, mid: str) -> tuple[int, Any]:
        self.machines[mid]["lease"] = None
        return 200, {"status": "success", "data": {"ok": True}}

    def _wait(self, mid: str, states: list[str], params: dict[str, str]) -> tuple[int, Any]:
        machine = self.machines[mid]
        if machine["state"] in states and params.get("version") in (None, machine["version"]):
            return 200, {"ok": True, "state": machine["state"], "version": machine["version"]}
        self.now += float(params.get("timeout", "1"))
        return 408, {"error": "deadline_exceeded: machine failed to reach desired state"}

    def _cordon(self, cordoned: bool) -> Callable[[str, str], tuple[int, Any]]:
        def change(app: str, mid: str) -> tuple[int, Any]:
            self.machines[mid]["cordoned"] = cordoned
            self.steps.append(Step("cordon" if cordoned else "uncordon", mid))
            return 200, {"ok": True}

        return change

    # -- inside -----------------------------------------------------------------------

    def _boot(self, machine: JSON) -> None:
        config = machine["config"]
        if machine["state"] == RUNNING and self.exits(config):
            machine["state"] = "stopped"
        names = list(config.get("checks") or {})
        for service in config.get("services") or []:
            names += [f"servicecheck-{i:02d}" for i, _ in enumerate(service.get("checks") or [])]
        status = "critical" if self.unhealthy(config) else "passing"
        machine["checks"] = (
            [{"name": n, "status": status, "output": "HTTP 404"} for n in names]
            if machine["state"] == RUNNING
            else []
        )

    def _version(self) -> str:
        return f"01V{next(self._ids):05d}"

    def _view(self, machine: JSON) -> JSON:
        out = {k: copy.deepcopy(v) for k, v in machine.items() if k not in ("lease", "versions")}
        out["image_ref"] = {"registry": "", "repository": "", "tag": "", "digest": ""}
        out["updated_at"] = "2024-05-01T12:00:00Z"
        out["private_ip"] = "fdaa::1"
        return out
