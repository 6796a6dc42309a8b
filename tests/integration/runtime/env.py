"""Test environments for the runtime integration tests, and their cleanup by hand."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from roost.net import HostNetwork, MachineNetworks
from roost.runtime import RuncDriver
from roost.runtime.runc import CGROUP_ROOT
from roost.runtime.shim import STATE_FILE, proc_stat
from roost.runtime.supervised import read_json


@dataclass
class NetEnv:
    host: HostNetwork
    machines: MachineNetworks


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


async def clean(env: RuncEnv) -> None:
    """Destroy through the driver, then remove by hand whatever that left (on failures)."""
    final = env.new()
    for mid in final.known():
        with contextlib.suppress(Exception):
            await final.destroy(mid)
    for d in env.made:
        d.close()
    clean_by_hand(env)


def clean_by_hand(env: RuncEnv) -> None:
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
    reap_orphans()


def reap_orphans() -> None:
    """Reap what was re-parented to us (we are a subreaper, like the agent) and exited:
    shims killed above, spare shims of killed test agents."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
