"""The runc driver against real runc, cgroups, overlayfs and network namespaces (root only)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from roost.runtime import (
    Driver,
    DriverError,
    LaunchSpec,
    MachineNotPrepared,
    Mount,
    ProcessSpec,
    Resources,
    RuncDriver,
)
from roost.runtime.shim import STATE_FILE, proc_stat
from tests.fixtures.rootfs import INDEX_HTML, make_fifo, wait_fifo
from tests.integration.runtime.env import NetEnv, RuncEnv

pytestmark = pytest.mark.root

MID = "0123456789abcd"
# Handles TERM, then says so through the FIFO /ctl/ready (see _ctl).
TRAP_TERM = "trap 'exit 7' TERM; echo > /ctl/ready; sleep 1000 & wait"
DOCKER_CAP_MASK = 0xA80425FB


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _spec(rootfs: Path, *argv: str, mid: str = MID, **kw: object) -> LaunchSpec:
    return LaunchSpec(mid, rootfs, ProcessSpec(list(argv), {}), **kw)  # type: ignore[arg-type]


def _ctl(tmp_path: Path) -> tuple[Path, Mount]:
    """The FIFO ``/ctl/ready`` inside the machine: (its host path, the mount to give)."""
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    return make_fifo(ctl), Mount(ctl, "/ctl")


async def _start(driver: RuncDriver, spec: LaunchSpec) -> int:
    await driver.prepare(spec)
    info = await driver.start(spec.machine_id)
    assert info.state == "running" and info.pid is not None and info.started_at
    return info.pid


async def _http_get(host: str, port: int, deadline: float = 5.0) -> tuple[int, str]:
    """GET / once the server accepts connections (there is no event to wait for)."""
    end = time.monotonic() + deadline
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            break
        except ConnectionRefusedError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.005)
    writer.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_httpd_is_reachable_over_v4_and_v6(
    runc_env: RuncEnv, net_env: NetEnv, busybox_rootfs: Path
) -> None:
    driver = runc_env.new()
    netns = await net_env.machines.create(MID, 5)
    addr = net_env.host.addressing.address(5)
    try:
        spec = _spec(busybox_rootfs, "httpd", "-f", "-p", "8080", "-h", "/www", netns=netns)
        await _start(driver, spec)
        assert await _http_get(str(addr.v4), 8080) == (200, INDEX_HTML)
        assert await _http_get(str(addr.v6), 8080) == (200, INDEX_HTML)
        # httpd installs no TERM handler; behind tini as PID 1 the default action
        # applies, so the stop signal alone ends it.
        status = await driver.stop(MID, signal.SIGTERM, 10)
        assert status is not None and status.exit_code == 128 + signal.SIGTERM
    finally:
        await driver.destroy(MID)
        await net_env.machines.delete(MID)


async def test_exit_code_is_captured(runc_env: RuncEnv, busybox_rootfs: Path) -> None:
    driver = runc_env.new()
    await _start(driver, _spec(busybox_rootfs, "sh", "-c", "echo hello; exit 42"))
    status = await driver.wait(MID)
    assert (status.exit_code, status.signal, status.oom_killed, status.lost) == (
        42,
        None,
        False,
        False,
    )
    assert _output(driver) == "hello\n"
    info = await driver.inspect(MID)
    assert info.state == "exited" and info.exit == status


async def test_stop_returns_the_trapped_exit_code(
    runc_env: RuncEnv, busybox_rootfs: Path, tmp_path: Path
) -> None:
    driver = runc_env.new()
    ready, ctl = _ctl(tmp_path)
    await _start(driver, _spec(busybox_rootfs, "sh", "-c", TRAP_TERM, mounts=(ctl,)))
    await wait_fifo(ready)
    status = await driver.stop(MID, signal.SIGTERM, 10)
    assert status is not None and (status.exit_code, status.signal) == (7, None)
    assert await driver.stop(MID, signal.SIGTERM, 10) is None


async def test_stop_kills_an_init_ignoring_term(runc_env: RuncEnv, busybox_rootfs: Path) -> None:
    driver = runc_env.new()
    stubborn = "trap '' TERM; while true; do sleep 1; done"
    await _start(driver, _spec(busybox_rootfs, "sh", "-c", stubborn))
    t0 = time.monotonic()
    status = await driver.stop(MID, signal.SIGTERM, 0.3)
    assert time.monotonic() - t0 >= 0.3
    assert status is not None and (status.exit_code, status.signal) == (137, 9)


async def test_memory_limit_oom_kills(runc_env: RuncEnv, busybox_rootfs: Path) -> None:
    driver = runc_env.new()
    # A 48 MiB string held by the shell itself (busybox has no stress tool).
    grab = 'x=$(head -c 50331648 /dev/zero | tr "\\0" a); echo ${#x}'
    await _start(driver, _spec(busybox_rootfs, "sh", "-c", grab, resources=Resources(memory_mb=24)))
    status = await driver.wait(MID)
    # tini, as PID 1, reports its child's SIGKILL as exit code 128 + 9.
    assert (status.exit_code, status.oom_killed) == (137, True)
    # The same allocation fits in 256 MiB: the limit, not the command, killed it.
    roomy = _spec(busybox_rootfs, "sh", "-c", grab, resources=Resources(memory_mb=256))
    await _start(driver, roomy)
    status = await driver.wait(MID)
    assert (status.exit_code, status.oom_killed) == (0, False)
    # stdout alone: the first run's shell may have said "Killed" on stderr.
    assert driver.log_paths(MID)["stdout"].read_text().splitlines()[-1] == "50331648"


async def test_cgroup_limits_are_applied(runc_env: RuncEnv, busybox_rootfs: Path) -> None:
    driver = runc_env.new()
    res = Resources(cpus=2, memory_mb=64, pids_limit=100)
    await _start(driver, _spec(busybox_rootfs, "sleep", "1000", resources=res))

    def read(controller: str, name: str) -> str:
        return (runc_env.cgroup(controller, MID) / name).read_text().strip()

    assert read("memory", "memory.limit_in_bytes") == str(64 << 20)
    assert read("memory", "memory.memsw.limit_in_bytes") == str(64 << 20)
    assert read("cpu", "cpu.cfs_quota_us") == "200000"
    assert read("cpu", "cpu.cfs_period_us") == "100000"
    assert read("cpu", "cpu.shares") == "256"  # two shared vCPUs: 2 x 1024 / 8
    assert read("pids", "pids.max") == "100"
    await driver.stop(MID, signal.SIGKILL, 5)


async def test_capabilities_are_reduced_and_no_new_privs(
    runc_env: RuncEnv, busybox_rootfs: Path
) -> None:
    driver = runc_env.new()
    await _start(driver, _spec(busybox_rootfs, "cat", "/proc/1/status"))
    assert (await driver.wait(MID)).exit_code == 0
    fields = dict(line.split(":\t", 1) for line in _output(driver).splitlines() if ":\t" in line)
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        assert int(fields[cap], 16) == DOCKER_CAP_MASK, cap
    assert int(fields["CapAmb"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"


async def test_rootfs_is_fresh_on_each_start(runc_env: RuncEnv, busybox_rootfs: Path) -> None:
    driver = runc_env.new()
    script = "test ! -e /marker || exit 9; touch /marker; rm /bin/cat; hostname"
    spec = _spec(busybox_rootfs, "sh", "-c", script, hostname="web-1")
    for _ in range(2):
        await _start(driver, spec)
        assert (await driver.wait(MID)).exit_code == 0
    assert _output(driver) == "web-1\nweb-1\n"
    assert not (busybox_rootfs / "marker").exists() and (busybox_rootfs / "bin" / "cat").exists()
    await driver.wait(MID)
    # Exited machines hold no mounts and need a prepare before the next start.
    await driver.prepare(spec)
    await driver.destroy(MID)
    with pytest.raises(MachineNotPrepared):
        await driver.start(MID)


async def test_stopped_machine_releases_its_mount(runc_env: RuncEnv, busybox_rootfs: Path) -> None:
    driver = runc_env.new()
    await _start(driver, _spec(busybox_rootfs, "true"))
    await driver.wait(MID)
    await driver._settle(MID)
    assert not _mounted(driver.machine_dir(MID) / "rootfs")
    with pytest.raises(MachineNotPrepared):
        await driver.start(MID)


async def test_missing_program_is_reported_before_start(
    runc_env: RuncEnv, busybox_rootfs: Path
) -> None:
    driver = runc_env.new()
    with pytest.raises(DriverError, match=r"no-such-program.*not found"):
        await driver.prepare(_spec(busybox_rootfs, "no-such-program"))
    with pytest.raises(DriverError):
        await driver.start(MID)
    assert not _mounted(driver.machine_dir(MID) / "rootfs")
    assert not (runc_env.runc_root / MID).exists()
    assert (await driver.inspect(MID)).state == "absent"


async def test_recover_after_the_driver_is_dropped(
    runc_env: RuncEnv, busybox_rootfs: Path, tmp_path: Path
) -> None:
    old = runc_env.new()
    ready, ctl = _ctl(tmp_path)
    pid = await _start(old, _spec(busybox_rootfs, "sh", "-c", TRAP_TERM, mounts=(ctl,)))
    await wait_fifo(ready)
    old.close()
    del old
    driver = runc_env.new()
    assert driver.known() == [MID]
    assert (await driver.inspect(MID)).state == "running"
    info = await driver.recover(MID)
    assert (info.state, info.pid) == ("running", pid)
    status = await driver.stop(MID, signal.SIGTERM, 10)
    assert status is not None and status.exit_code == 7


async def test_exit_while_no_driver_is_found_by_recover(
    runc_env: RuncEnv, busybox_rootfs: Path, tmp_path: Path
) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    os.mkfifo(ctl / "go")
    old = runc_env.new()
    spec = _spec(
        busybox_rootfs, "sh", "-c", "read x < /ctl/go; exit 5", mounts=(Mount(ctl, "/ctl"),)
    )
    await _start(old, spec)
    shim_pid = json.loads((old.machine_dir(MID) / STATE_FILE).read_text())["pid"]
    old.close()
    pidfd = os.pidfd_open(shim_pid)
    fd = os.open(ctl / "go", os.O_WRONLY)
    os.write(fd, b"go\n")
    os.close(fd)
    # The shim is our child: reap it, as the agent would.
    await asyncio.to_thread(os.waitid, os.P_PIDFD, pidfd, os.WEXITED)
    os.close(pidfd)
    driver = runc_env.new()
    info = await driver.recover(MID)
    assert info.state == "exited" and info.exit is not None and info.exit.exit_code == 5
    await driver._settle(MID)
    assert not _mounted(driver.machine_dir(MID) / "rootfs")


AGENT = """
import asyncio, sys
from pathlib import Path
from roost.runtime import LaunchSpec, Mount, ProcessSpec, RuncDriver, set_child_subreaper

async def main():
    set_child_subreaper()
    state, runc_root, parent, rootfs, mid, script, ctl = sys.argv[1:8]
    d = RuncDriver(Path(state), runc_root=Path(runc_root), cgroup_parent=parent)
    process = ProcessSpec(["sh", "-c", script], {})
    spec = LaunchSpec(mid, Path(rootfs), process, mounts=(Mount(Path(ctl), "/ctl"),))
    await d.prepare(spec)
    info = await d.start(spec.machine_id)
    print(info.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_machine_survives_agent_sigkill(
    runc_env: RuncEnv, busybox_rootfs: Path, tmp_path: Path
) -> None:
    ready, ctl = _ctl(tmp_path)
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AGENT,
        str(runc_env.state_dir),
        str(runc_env.runc_root),
        runc_env.cgroup_parent,
        str(busybox_rootfs),
        MID,
        TRAP_TERM,
        str(ctl.source),
        stdout=asyncio.subprocess.PIPE,
    )
    assert agent.stdout is not None
    pid = int(await agent.stdout.readline())
    await wait_fifo(ready)
    agent.kill()
    await agent.wait()
    stat = proc_stat(pid)
    assert stat is not None and stat[0] != "Z"
    # The orphaned shim came to us, the nearest subreaper, as it would to the agent's.
    shim_pid = json.loads((runc_env.state_dir / MID / STATE_FILE).read_text())["pid"]
    assert proc_stat(shim_pid)[1] == os.getpid()  # type: ignore[index]
    driver = runc_env.new()
    info = await driver.recover(MID)
    assert (info.state, info.pid) == ("running", pid)
    status = await driver.stop(MID, signal.SIGTERM, 10)
    assert status is not None and status.exit_code == 7


async def test_killed_shim_is_reported_lost(runc_env: RuncEnv, busybox_rootfs: Path) -> None:
    driver = runc_env.new()
    await _start(driver, _spec(busybox_rootfs, "sleep", "1000"))
    shim_pid = json.loads((driver.machine_dir(MID) / STATE_FILE).read_text())["pid"]
    os.kill(shim_pid, signal.SIGKILL)
    status = await driver.wait(MID)
    assert (status.exit_code, status.lost) == (255, True)
    assert not (runc_env.runc_root / MID).exists()
    assert (await driver.inspect(MID)).exit == status


async def test_destroy_removes_every_trace(
    runc_env: RuncEnv, net_env: NetEnv, busybox_rootfs: Path
) -> None:
    driver = runc_env.new()
    netns = await net_env.machines.create(MID, 6)
    pid = await _start(driver, _spec(busybox_rootfs, "sleep", "1000", netns=netns))
    mdir = driver.machine_dir(MID)
    assert _mounted(mdir / "rootfs") and runc_env.cgroup("memory", MID).is_dir()
    await driver.destroy(MID)
    await net_env.machines.delete(MID)
    assert proc_stat(pid) is None
    assert not mdir.exists()
    assert str(mdir) not in _mountinfo()
    assert not (runc_env.runc_root / MID).exists()
    for controller in ("memory", "cpu", "pids", "freezer", "devices"):
        assert not runc_env.cgroup(controller, MID).exists(), controller
    assert not net_env.machines.exists(MID)
    await driver.destroy(MID)
    assert (await driver.inspect(MID)).state == "absent"


def _output(driver: Driver) -> str:
    """stdout then stderr, as one text (these tests write to one or the other)."""
    paths = driver.log_paths(MID)
    return "".join(p.read_text() for p in (paths["stdout"], paths["stderr"]) if p.exists())


async def test_exec_runs_inside_the_machine(runc_env: RuncEnv, busybox_rootfs: Path) -> None:
    driver = runc_env.new()
    spec = LaunchSpec(
        MID, busybox_rootfs, ProcessSpec(["sleep", "1000"], {"GREETING": "hi from env"})
    )
    await _start(driver, spec)
    result = await driver.exec(
        MID, ["sh", "-c", 'echo "$GREETING"; hostname; echo oops >&2; exit 3'], timeout=10
    )
    assert result.stdout.decode().splitlines() == ["hi from env", MID]
    assert (result.stderr, result.exit_code, result.timed_out) == (b"oops\n", 3, False)
    piped = await driver.exec(MID, ["cat"], timeout=10, stdin=b"through stdin")
    assert piped.stdout == b"through stdin"
    slow = await driver.exec(MID, ["sleep", "30"], timeout=0.5)
    assert slow.timed_out and slow.exit_code != 0
    pids = await driver.processes(MID)
    assert len(pids) >= 2  # tini and sleep; the timed-out exec is gone
    assert not any("sleep 30" in _cmdline(pid) for pid in pids)
    await driver.stop(MID, signal.SIGKILL, 1)
    with pytest.raises(DriverError, match="not running"):
        await driver.exec(MID, ["true"], timeout=1)
    assert await driver.processes(MID) == []


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_console_is_a_terminal_in_the_machine(
    runc_env: RuncEnv, busybox_rootfs: Path
) -> None:
    driver = runc_env.new()
    await _start(driver, _spec(busybox_rootfs, "sleep", "1000"))
    console = await driver.console(MID, ["sh"], cols=91, rows=33)
    try:
        loop = asyncio.get_running_loop()
        os.write(console.master, b"stty size; hostname; exit 7\n")
        output = b""
        while b"\n" + MID.encode() not in output.replace(b"\r", b""):
            readable = asyncio.Event()
            loop.add_reader(console.master, readable.set)
            try:
                await asyncio.wait_for(readable.wait(), 5)
            finally:
                loop.remove_reader(console.master)
            output += os.read(console.master, 4096)
        assert b"33 91" in output
        assert await asyncio.wait_for(console.wait(), 5) == 7
    finally:
        console.close()


def test_capabilities_of_runc_machines(runc_env: RuncEnv) -> None:
    caps = runc_env.new().capabilities()
    assert (caps.isolation, caps.network, caps.volumes, caps.suspend) == (
        "container",
        True,
        True,
        False,
    )
