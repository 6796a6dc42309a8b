"""Root-only fixtures: a private bridge and address ranges, runc drivers that clean up.

Names are unique per test run (bridge, netns prefix, cgroup parent, subnets), so runs
on the same host don't collide, and teardown removes everything even after failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.net import HostNetwork, MachineAddressing, MachineNetworks
from roost.runtime import RuncDriver, set_child_subreaper
from roost.runtime.runc import CGROUP_ROOT
from roost.runtime.shim import STATE_FILE, proc_stat
from roost.runtime.supervised import read_json

RUN = secrets.token_hex(2)


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> Iterator[None]:
    """Like the agent: orphans of the machines we start come to us, not to PID 1."""
    set_child_subreaper(True)
    yield
    set_child_subreaper(False)


def _free_octet() -> int:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for octet in range(int(RUN, 16) % 200 + 20, 255):
        if f"172.31.{octet}." not in routes:
            return octet
    raise RuntimeError("no free 172.31.x.0/24 for the test network")


@dataclass
class NetEnv:
    host: HostNetwork
    machines: MachineNetworks


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


@dataclass
class RuncEnv:
    """Driver instances over one state dir, as successive agent runs would create them."""

    state_dir: Path
    runc_root: Path
    cgroup_parent: str
    made: list[RuncDriver] = field(default_factory=list)

    def new(self) -> RuncDriver:
        d = RuncDriver(self.state_dir, runc_root=self.runc_root, cgroup_parent=self.cgroup_parent)
        self.made.append(d)
        return d

    def cgroup(self, controller: str, machine_id: str) -> Path:
        return CGROUP_ROOT / controller / self.cgroup_parent.strip("/") / machine_id


@pytest.fixture
async def runc_env(tmp_path: Path) -> AsyncIterator[RuncEnv]:
    env = RuncEnv(tmp_path / "machines", tmp_path / "runc", f"/roost-test-{secrets.token_hex(4)}")
    try:
        yield env
    finally:
        await _clean(env)


async def _clean(env: RuncEnv) -> None:
    """Destroy through the driver, then remove by hand whatever that left (on failures)."""
    final = env.new()
    for mid in final.known():
        with contextlib.suppress(Exception):
            await final.destroy(mid)
    for d in env.made:
        d.close()
    _clean_by_hand(env)


def _clean_by_hand(env: RuncEnv) -> None:
    for state_file in env.state_dir.glob(f"*/{STATE_FILE}"):
        state = read_json(state_file) or {}
        stat = proc_stat(state.get("pid", 0))
        if stat is not None and stat[2] == state.get("start_ticks"):
            os.kill(state["pid"], signal.SIGKILL)
    listing = subprocess.run(
        ["runc", "--root", str(env.runc_root), "list", "-q"], capture_output=True, text=True
    )
    for cid in listing.stdout.split():
        subprocess.run(["runc", "--root", str(env.runc_root), "delete", "-f", cid], check=False)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4]
        if target.startswith(str(env.state_dir)):
            subprocess.run(["umount", "-l", target], check=False)
    parent = env.cgroup_parent.strip("/")
    for controller in CGROUP_ROOT.iterdir():
        top = controller / parent
        if top.is_dir():
            for d in sorted(top.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
