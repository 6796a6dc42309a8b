"""Root-only fixtures: a private bridge and address ranges, runc drivers that clean up.

Names are unique per test run (bridge, netns prefix, cgroup parent, subnets), so runs
on the same host don't collide, and teardown removes everything even after failures.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from roost.net import HostNetwork, MachineAddressing, MachineNetworks
from roost.runtime import set_child_subreaper
from tests.integration.runtime.env import NetEnv, RuncEnv, clean, reap_orphans

RUN = secrets.token_hex(2)


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> Iterator[None]:
    """Like the agent: orphans of the machines we start come to us, not to PID 1."""
    set_child_subreaper(True)
    yield
    set_child_subreaper(False)
    reap_orphans()


def _free_octet() -> int:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for octet in range(int(RUN, 16) % 200 + 20, 255):
        if f"172.31.{octet}." not in routes:
            return octet
    raise RuntimeError("no free 172.31.x.0/24 for the test network")


@pytest.fixture(scope="session")
def net_env() -> Iterator[NetEnv]:
    """Bridge ``rsttest<run>`` with 172.31.X.0/25 and fdaa:9:X::/64, each range under its
    own ``unreachable`` route (172.31.X.0/24, fdaa:9:X::/48) installed first."""
    x = _free_octet()
    addressing = MachineAddressing(f"172.31.{x}.0/25", f"fdaa:9:{x:x}::/64")
    host = HostNetwork(
        bridge=f"rsttest{RUN}",
        addressing=addressing,
        unreachable_v4=f"172.31.{x}.0/24",
        unreachable_v6=f"fdaa:9:{x:x}::/48",
    )
    machines = MachineNetworks(host.bridge, addressing, netns_prefix=f"rsttest{RUN}-")
    try:
        asyncio.run(host.setup())
        yield NetEnv(host, machines)
    finally:
        for ns in Path("/run/netns").glob(f"{machines.netns_prefix}*"):
            subprocess.run(["ip", "netns", "del", ns.name], check=False)
        asyncio.run(host.teardown())


@pytest.fixture
async def runc_env(tmp_path: Path) -> AsyncIterator[RuncEnv]:
    env = RuncEnv(tmp_path / "machines", tmp_path / "runc", f"/roost-test-{secrets.token_hex(4)}")
    try:
        yield env
    finally:
        await clean(env)
