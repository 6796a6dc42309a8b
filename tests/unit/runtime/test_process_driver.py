"""The shim's protocol (start message, exit file, re-attach) through the process driver.

Runs without root. Every test destroys its machines, which kills their processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.runtime import (
    Driver,
    DriverError,
    LaunchSpec,
    MachineNotPrepared,
    ProcessDriver,
    ProcessSpec,
    select_driver,
)
from roost.runtime.shim import STATE_FILE, proc_stat
from tests.fixtures.rootfs import make_fifo, wait_fifo

MID = "0123456789abcd"


@dataclass
class Drivers:
    """Driver instances over one state dir, as successive agent runs would create them."""

    state_dir: Path
    made: list[ProcessDriver] = field(default_factory=list)

    def new(self) -> ProcessDriver:
        d = ProcessDriver(self.state_dir)
        self.made.append(d)
        return d


@pytest.fixture
async def drivers(tmp_path: Path) -> AsyncIterator[Drivers]:
    ds = Drivers(tmp_path / "state")
    yield ds
    final = ds.new()
    for mid in final.known():
        await final.destroy(mid)
    for d in ds.made:
        d.close()


@pytest.fixture
def driver(drivers: Drivers) -> ProcessDriver:
    return drivers.new()


def _spec(rootfs: Path, *argv: str, env: dict[str, str] | None = None) -> LaunchSpec:
    return LaunchSpec(MID, rootfs, ProcessSpec(list(argv), env or {}))


def _trap(ready: Path, signame: str, action: str) -> str:
    """A shell that handles ``signame`` with ``action``, says so on ``ready``, then idles."""
    return f"trap '{action}' {signame}; echo > {ready}; sleep 1000 & wait"


async def _run(driver: ProcessDriver, spec: LaunchSpec) -> None:
    await driver.prepare(spec)
    info = await driver.start(spec.machine_id)
    assert info.state == "running" and info.pid and info.started_at


async def test_exit_code_is_recorded(driver: ProcessDriver, busybox_rootfs: Path) -> None:
    await _run(driver, _spec(busybox_rootfs, "sh", "-c", "echo out; echo err >&2; exit 42"))
    status = await driver.wait(MID)
    assert (status.exit_code, status.signal, status.oom_killed, status.lost) == (
        42,
        None,
        False,
        False,
    )
    assert status.exited_at > time.time() - 60
    paths = driver.log_paths(MID)
    assert (paths["stdout"].read_text(), paths["stderr"].read_text()) == ("out\n", "err\n")
    info = await driver.inspect(MID)
    assert info.state == "exited" and info.exit == status
    assert await driver.wait(MID) == status
    assert await driver.stop(MID, signal.SIGTERM, 1) is None


async def test_runs_inside_a_fresh_copy(driver: ProcessDriver, busybox_rootfs: Path) -> None:
    script = 'test ! -e marker || exit 9; touch marker; echo "$PWD|$PATH|$0"'
    spec = _spec(busybox_rootfs, "sh", "-c", script, env={"PATH": "/bin:/usr/bin"})
    for _ in range(2):
        await _run(driver, spec)
        assert (await driver.wait(MID)).exit_code == 0
    root = driver.machine_dir(MID) / "root"
    cwd, path, argv0 = _output(driver).splitlines()[-1].split("|")
    assert Path(cwd) == root
    assert path.split(":")[:2] == [str(root / "bin"), "/bin"]
    assert argv0 == "sh"
    assert not (busybox_rootfs / "marker").exists()


async def test_start_needs_prepare(driver: ProcessDriver, busybox_rootfs: Path) -> None:
    with pytest.raises(MachineNotPrepared):
        await driver.start(MID)
    await _run(driver, _spec(busybox_rootfs, "true"))
    await driver.wait(MID)
    await driver.destroy(MID)  # releases the copy: the next start needs a prepare again
    with pytest.raises(MachineNotPrepared):
        await driver.start(MID)


async def test_failed_exec_is_a_driver_error(driver: ProcessDriver, busybox_rootfs: Path) -> None:
    await driver.prepare(_spec(busybox_rootfs, "no-such-program"))
    with pytest.raises(DriverError, match="no-such-program"):
        await driver.start(MID)
    assert (await driver.inspect(MID)).state == "absent"


async def test_running_machine_refuses_prepare_and_start(
    driver: ProcessDriver, busybox_rootfs: Path
) -> None:
    spec = _spec(busybox_rootfs, "sleep", "1000")
    await _run(driver, spec)
    with pytest.raises(DriverError, match="running"):
        await driver.prepare(spec)
    with pytest.raises(DriverError, match="running"):
        await driver.start(MID)


async def test_stop_with_trapped_term(
    driver: ProcessDriver, busybox_rootfs: Path, tmp_path: Path
) -> None:
    ready = make_fifo(tmp_path)
    await _run(driver, _spec(busybox_rootfs, "sh", "-c", _trap(ready, "TERM", "exit 7")))
    await wait_fifo(ready)
    status = await driver.stop(MID, signal.SIGTERM, 10)
    assert status is not None and (status.exit_code, status.signal) == (7, None)


async def test_stop_escalates_to_kill(
    driver: ProcessDriver, busybox_rootfs: Path, tmp_path: Path
) -> None:
    ready = make_fifo(tmp_path)
    await _run(driver, _spec(busybox_rootfs, "sh", "-c", _trap(ready, "TERM", "")))
    await wait_fifo(ready)
    t0 = time.monotonic()
    status = await driver.stop(MID, signal.SIGTERM, 0.2)
    assert time.monotonic() - t0 >= 0.2
    assert status is not None and (status.exit_code, status.signal) == (137, 9)


async def test_signal_reaches_the_process(
    driver: ProcessDriver, busybox_rootfs: Path, tmp_path: Path
) -> None:
    ready = make_fifo(tmp_path)
    await _run(driver, _spec(busybox_rootfs, "sh", "-c", _trap(ready, "USR1", "exit 3")))
    await wait_fifo(ready)
    await driver.signal(MID, signal.SIGUSR1)
    assert (await driver.wait(MID)).exit_code == 3
    await driver.signal(MID, signal.SIGUSR1)  # not running: a no-op


async def test_leftovers_are_killed_when_main_exits(
    driver: ProcessDriver, busybox_rootfs: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "bg.pid"
    script = f"sleep 1000 & echo $! > {pid_file}; setsid sleep 1000 & exit 3"
    await _run(driver, _spec(busybox_rootfs, "sh", "-c", script))
    assert (await driver.wait(MID)).exit_code == 3
    assert proc_stat(int(pid_file.read_text())) is None


async def test_recover_reattaches_after_driver_restart(
    drivers: Drivers, driver: ProcessDriver, busybox_rootfs: Path, tmp_path: Path
) -> None:
    ready = make_fifo(tmp_path)
    await _run(driver, _spec(busybox_rootfs, "sh", "-c", _trap(ready, "TERM", "exit 7")))
    await wait_fifo(ready)
    pid = (await driver.inspect(MID)).pid
    driver.close()
    fresh = drivers.new()
    assert fresh.known() == [MID]
    assert (await fresh.inspect(MID)).state == "running"
    info = await fresh.recover(MID)
    assert (info.state, info.pid) == ("running", pid)
    status = await fresh.stop(MID, signal.SIGTERM, 10)
    assert status is not None and status.exit_code == 7


async def test_exit_while_no_driver_is_found_by_recover(
    drivers: Drivers, driver: ProcessDriver, busybox_rootfs: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    await _run(driver, _spec(busybox_rootfs, "sh", "-c", f"read x < {fifo}; exit 5"))
    shim_pid = json.loads((driver.machine_dir(MID) / STATE_FILE).read_text())["pid"]
    driver.close()
    pidfd = os.pidfd_open(shim_pid)
    fd = os.open(fifo, os.O_WRONLY)
    os.write(fd, b"go\n")
    os.close(fd)
    # The shim is our child: reap it, as the agent would.
    await asyncio.to_thread(os.waitid, os.P_PIDFD, pidfd, os.WEXITED)
    os.close(pidfd)
    fresh = drivers.new()
    info = await fresh.recover(MID)
    assert info.state == "exited" and info.exit is not None and info.exit.exit_code == 5
    assert await fresh.wait(MID) == info.exit


async def test_killed_shim_is_reported_lost(driver: ProcessDriver, busybox_rootfs: Path) -> None:
    await _run(driver, _spec(busybox_rootfs, "sleep", "1000"))
    pid = (await driver.inspect(MID)).pid
    assert pid is not None
    state = json.loads((driver.machine_dir(MID) / STATE_FILE).read_text())
    os.kill(state["pid"], signal.SIGKILL)
    status = await driver.wait(MID)
    assert (status.exit_code, status.lost) == (255, True)
    assert proc_stat(pid) is None or proc_stat(pid)[0] == "Z"  # type: ignore[index]
    assert (await driver.inspect(MID)).exit == status


async def test_destroy_is_idempotent(driver: ProcessDriver, busybox_rootfs: Path) -> None:
    await _run(driver, _spec(busybox_rootfs, "sleep", "1000"))
    pid = (await driver.inspect(MID)).pid
    assert pid is not None
    await driver.destroy(MID)
    await driver.destroy(MID)
    assert proc_stat(pid) is None
    assert not driver.machine_dir(MID).exists()
    assert driver.known() == []
    assert (await driver.inspect(MID)).state == "absent"


def test_invalid_machine_id_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DriverError):
        ProcessDriver(tmp_path).machine_dir("../etc")


def test_select_driver(tmp_path: Path) -> None:
    runc_root, parent = tmp_path / "runc", "/roost-test"

    def select(prefer: str | None, runc: str = "no-such-runc") -> object:
        return select_driver(
            tmp_path / "s", prefer=prefer, runc_root=runc_root, cgroup_parent=parent, runc=runc
        )

    assert isinstance(select("process", runc="runc"), ProcessDriver)
    assert isinstance(select(None), ProcessDriver)
    with pytest.raises(DriverError):
        select("runc")
    with pytest.raises(DriverError):
        select("vm")


def _output(driver: Driver) -> str:
    """stdout then stderr, as one text (these tests write to one or the other)."""
    paths = driver.log_paths(MID)
    return "".join(p.read_text() for p in (paths["stdout"], paths["stderr"]) if p.exists())


async def test_exec_and_processes(driver: ProcessDriver, busybox_rootfs: Path) -> None:
    spec = LaunchSpec(MID, busybox_rootfs, ProcessSpec(["sleep", "1000"], {"WHO": "proc"}))
    await _run(driver, spec)
    result = await driver.exec(MID, ["sh", "-c", "echo $WHO; exit 4"], timeout=10)
    assert (result.stdout, result.exit_code) == (b"proc\n", 4)
    assert len(await driver.processes(MID)) == 1
    await driver.stop(MID, signal.SIGKILL, 1)
    with pytest.raises(DriverError, match="not running"):
        await driver.exec(MID, ["true"], timeout=1)


def test_capabilities_say_there_is_no_isolation(tmp_path: Path) -> None:
    caps = ProcessDriver(tmp_path).capabilities()
    assert caps.isolation == "none" and not (caps.network or caps.volumes or caps.suspend)
