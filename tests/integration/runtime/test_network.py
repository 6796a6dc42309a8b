"""Host bridge and machine network namespaces (root only)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from pathlib import Path

import pytest

from roost.net.iproute import NetworkError
from roost.net.machine import host_veth_name, link_exists
from tests.integration.runtime.env import NetEnv

pytestmark = pytest.mark.root


def _ip_forward() -> bytes:
    return Path("/proc/sys/net/ipv4/ip_forward").read_bytes().strip()


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


async def test_setup_is_idempotent_and_routes_cover_the_ranges(net_env: NetEnv) -> None:
    host = net_env.host
    await host.setup()
    assert host.bridge_exists()
    routes = _ip("route", "show", "type", "unreachable")
    assert host.unreachable_v4 in routes
    assert host.unreachable_v6 in _ip("-6", "route", "show", "type", "unreachable")
    addrs = _ip("addr", "show", "dev", host.bridge)
    assert f"{host.addressing.gateway_v4}/" in addrs
    assert f"{host.addressing.gateway_v6}/" in addrs
    gateway = f"{host.addressing.gateway_v6}/"
    assert "tentative" not in next(line for line in addrs.splitlines() if gateway in line)
    assert _ip_forward() == b"0"


async def test_a_second_server_cannot_take_the_bridge_or_its_ranges(net_env: NetEnv) -> None:
    host = dataclasses.replace(net_env.host, owner="/srv/a")
    await host.setup()
    await host.setup()  # the same server again: fine
    assert "roost data-dir=/srv/a" in _ip("link", "show", "dev", host.bridge)
    with pytest.raises(NetworkError, match="belongs to the roost server on /srv/a"):
        await dataclasses.replace(host, owner="/srv/b").setup()
    elsewhere = dataclasses.replace(host, owner="/srv/b", bridge=f"{host.bridge[:14]}b")
    with pytest.raises(NetworkError, match=f"{host.addressing.v4} is already routed to"):
        await elsewhere.setup()
    assert not link_exists(elsewhere.bridge)


async def test_create_is_idempotent_and_delete_removes_veth(net_env: NetEnv) -> None:
    nets = net_env.machines
    mid = "00000000000a11"
    path = await nets.create(mid, 11)
    try:
        assert path == nets.netns_path(mid) and path.exists() and nets.exists(mid)
        assert await nets.create(mid, 11) == path
        name = nets.netns_name(mid)
        addr = net_env.host.addressing.address(11)
        inside = _ip("-n", name, "addr", "show", "dev", "eth0")
        assert f"{addr.v4}/" in inside and f"{addr.v6}/" in inside
        v6_line = next(line for line in inside.splitlines() if f"{addr.v6}/" in line)
        assert "tentative" not in v6_line
        routes = _ip("-n", name, "route") + _ip("-n", name, "-6", "route")
        assert f"default via {net_env.host.addressing.gateway_v4}" in routes
        assert f"default via {net_env.host.addressing.gateway_v6}" in routes
        veth = host_veth_name(name)
        assert len(veth) == 15
        assert f"master {net_env.host.bridge}" in _ip("link", "show", "dev", veth)
    finally:
        await nets.delete(mid)
    await nets.delete(mid)
    assert not nets.exists(mid)
    # The kernel removes the veth when it destroys the netns, asynchronously: re-creating
    # at once must cope with the stale one.
    assert await nets.create(mid, 11) == path
    await nets.delete(mid)
    veth = host_veth_name(nets.netns_name(mid))
    deadline = time.monotonic() + 5
    while link_exists(veth):  # no event to wait for
        assert time.monotonic() < deadline, "veth not removed with its netns"
        await asyncio.sleep(0.01)
