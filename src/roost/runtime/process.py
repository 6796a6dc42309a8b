"""Plain processes, no isolation: for development without root or runc.

Each ``prepare`` copies the image rootfs to ``state_dir/<id>/root`` (fresh every start)
and ``start`` runs the machine's argv through the shim's exec mode, with its working
directory inside that copy and ``PATH`` extended by the copy's bin directories (first),
``argv[0]`` resolved inside the copy when it exists there. The process sees the host's
filesystem, network and processes, and runs as the agent's user.

NOT enforced: resources (cpus, memory, pids), uid/gid, hostname, network namespace,
mounts, capabilities, ``/etc/hosts`` and ``/etc/resolv.conf``. When the main process
exits, whatever it left running is killed, as a container's pid namespace would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
from pathlib import Path
from typing import Any

from roost.runtime import oci, shim
from roost.runtime.base import Capabilities, DriverError, LaunchSpec, MachineStats
from roost.runtime.supervised import ShimDriver, ShimWatch, read_json, reap_if_child, send_signal

LAUNCH_FILE = "exec.json"


def resolve_launch(spec: LaunchSpec, root: Path) -> tuple[str, str, dict[str, str]]:
    """(executable, cwd, env) for running ``spec`` from the rootfs copy at ``root``."""
    env = dict(spec.process.env)
    path_dirs = env.get("PATH", oci.DEFAULT_PATH).split(":")
    inside = [str(root / d.lstrip("/")) for d in path_dirs if d and (root / d.lstrip("/")).is_dir()]
    env["PATH"] = ":".join([*inside, *path_dirs])
    cwd = root / spec.process.cwd.lstrip("/")
    argv0 = spec.process.argv[0]
    executable = argv0
    if "/" in argv0:
        candidate = root / argv0.lstrip("/") if argv0.startswith("/") else cwd / argv0
        if candidate.exists():
            executable = str(candidate)
    else:
        for d in inside:
            candidate = Path(d) / argv0
            if candidate.is_file() and os.access(candidate, os.X_OK):
                executable = str(candidate)
                break
    return executable, str(cwd), env


class ProcessDriver(ShimDriver):
    """Machines as plain host processes; see the module docstring for what is not enforced."""

    name = "process"

    def capabilities(self) -> Capabilities:
        return Capabilities(isolation="none")

    async def prepare(self, spec: LaunchSpec) -> None:
        mid = spec.machine_id
        mdir = self.machine_dir(mid)
        self._check_spec(spec)
        async with self._lock(mid):
            if self._attach(mid) is not None:
                raise DriverError(f"machine {mid} is running")
            await self._settle(mid)
            mdir.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(self._release, mid)
            root = mdir / "root"
            proc = await asyncio.create_subprocess_exec(
                "cp",
                "-a",
                "--reflink=auto",
                "--",
                f"{spec.rootfs}/.",
                str(root),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise DriverError(f"cannot copy the rootfs: {err.decode(errors='replace')}")
            try:
                await asyncio.to_thread(_write_launch, spec, mdir, root)
            except OSError as e:
                raise DriverError(f"cannot prepare machine {mid}: {e}") from e

    def _is_prepared(self, machine_id: str) -> bool:
        mdir = self.machine_dir(machine_id)
        return (mdir / LAUNCH_FILE).exists() and (mdir / "root").is_dir()

    def _shim_args(self, machine_id: str) -> list[str]:
        launch = json.loads((self.machine_dir(machine_id) / LAUNCH_FILE).read_text())
        return ["exec", launch["cwd"], launch["executable"], *launch["argv"]]

    def _exec_command(
        self, machine_id: str, argv: list[str], pid_file: Path
    ) -> tuple[list[str], dict[str, str] | None, str | None]:
        mdir = self.machine_dir(machine_id)
        launch = json.loads((mdir / LAUNCH_FILE).read_text())
        env_items = (mdir / shim.EXEC_ENV).read_bytes().split(b"\0")
        env = dict(item.decode().partition("=")[::2] for item in env_items if b"=" in item)
        executable = argv[0]
        for directory in env.get("PATH", "").split(":"):
            candidate = Path(directory) / argv[0]
            if "/" not in argv[0] and candidate.is_file() and os.access(candidate, os.X_OK):
                executable = str(candidate)
                break
        return [executable, *argv[1:]], env, launch["cwd"]

    def _console_command(
        self, machine_id: str, argv: list[str]
    ) -> tuple[list[str], dict[str, str] | None, str | None]:
        return self._exec_command(machine_id, argv, Path(os.devnull))

    async def stats(self, machine_id: str) -> MachineStats | None:
        pids = await self.processes(machine_id)
        if not pids:
            return None
        return await asyncio.to_thread(_proc_stats, pids)

    async def processes(self, machine_id: str) -> list[int]:
        watch = self._attach(machine_id)
        if watch is None or watch.pid is None or watch.exited.done():
            return []
        return await asyncio.to_thread(_group_members, watch.pid)

    async def _deliver(self, machine_id: str, watch: ShimWatch, signum: int) -> None:
        send_signal(watch.pid, watch.pid_start_ticks, signum)

    def _release(self, machine_id: str) -> None:
        mdir = self.machine_dir(machine_id)
        (mdir / LAUNCH_FILE).unlink(missing_ok=True)
        shutil.rmtree(mdir / "root", ignore_errors=True)

    async def _kill_orphan(self, machine_id: str, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        pid, ticks = state.get("init_pid"), state.get("init_start_ticks")
        # The shim put the process in its own group: the group id is its pid.
        if isinstance(pid, int) and send_signal(pid, ticks, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            await asyncio.to_thread(_wait_gone, pid)
            reap_if_child(pid)

    async def _remove(self, machine_id: str) -> None:
        state = read_json(self.machine_dir(machine_id) / shim.STATE_FILE)
        await self._kill_orphan(machine_id, state)
        await asyncio.to_thread(self._release, machine_id)


def _proc_stats(pids: list[int]) -> MachineStats:
    """Without cgroups of its own, a machine's use is what its processes use."""
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu, rss = 0.0, 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            rss += int(fields[21]) * page
    return MachineStats(cpu, rss)


def _group_members(group: int) -> list[int]:
    """Pids in a process group: the shim starts the machine's process as a group leader."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group:
                    pids.append(int(entry.name))
    return sorted(pids)


def _write_launch(spec: LaunchSpec, mdir: Path, root: Path) -> None:
    executable, cwd, env = resolve_launch(spec, root)
    Path(cwd).mkdir(parents=True, exist_ok=True)
    (mdir / shim.EXEC_ENV).write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))
    launch = {"cwd": cwd, "executable": executable, "argv": spec.process.argv}
    (mdir / LAUNCH_FILE).write_text(json.dumps(launch))


def _wait_gone(pid: int) -> None:
    """Until ``pid`` has exited (it was SIGKILLed)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)
