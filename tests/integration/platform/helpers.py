"""Small API helpers shared by the platform integration tests."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 10000}-{next(_names)}"


def new_app(c: httpx.Client, prefix: str = "app") -> str:
    name = unique(prefix)
    r = c.post("/v1/apps", json={"name": name, "org_slug": "personal"})
    assert r.status_code == 201, r.text
    return name


def create(c: httpx.Client, app: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = c.post(f"/v1/apps/{app}/machines", json={"config": config, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def wait(
    c: httpx.Client, app: str, mid: str, state: str, timeout: int = 30, **params: str
) -> dict[str, Any]:
    r = c.get(
        f"/v1/apps/{app}/machines/{mid}/wait",
        params={"state": state, "timeout": timeout, **params},
    )
    assert r.status_code == 200, f"waiting for {state}: {r.status_code} {r.text}"
    return r.json()


def get(c: httpx.Client, app: str, mid: str) -> dict[str, Any]:
    r = c.get(f"/v1/apps/{app}/machines/{mid}")
    assert r.status_code == 200, r.text
    return r.json()


def run(c: httpx.Client, app: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    machine = create(c, app, config, **extra)
    wait(c, app, machine["id"], "started")
    return get(c, app, machine["id"])


def events(c: httpx.Client, app: str, mid: str) -> list[dict[str, Any]]:
    r = c.get(f"/v1/apps/{app}/machines/{mid}/events", params={"limit": 50})
    assert r.status_code == 200, r.text
    return r.json()


def destroy(c: httpx.Client, app: str, mid: str) -> None:
    r = c.delete(f"/v1/apps/{app}/machines/{mid}", params={"force": "true"})
    assert r.status_code == 200, r.text
    wait(c, app, mid, "destroyed")


def ipv4(machine: dict[str, Any], roost_server: Any) -> str:
    """The machine's IPv4 address (same index as its IPv6 private_ip)."""
    import ipaddress

    v6 = ipaddress.IPv6Address(machine["private_ip"])
    v6_net = ipaddress.IPv6Network(roost_server.v6_subnet)
    v4_net = ipaddress.IPv4Network(roost_server.v4_subnet)
    return str(v4_net.network_address + (int(v6) - int(v6_net.network_address)))


def http_get(url: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout)


def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition the API has no event for, with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
