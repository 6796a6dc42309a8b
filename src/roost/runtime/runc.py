"""OCI containers with runc (cgroupfs driver), each start on a fresh overlay rootfs.

Per machine, ``state_dir/<id>/``: ``bundle/config.json``; ``layer/{upper,work}`` and the
overlay mounted on ``rootfs/`` (lower = the read-only image dir); ``hosts`` and
``resolv.conf`` bind-mounted into the container; ``console.log``; ``runc.log`` (runc's
own errors); the shim's ``shim.json``, ``init.pid``, ``exit.json`` and ``shim.log``.

A machine holds its overlay mount from ``prepare`` until its exit has been handled;
stopped machines hold no mounts, and each ``start`` needs a ``prepare`` first.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import logging
import os
import posixpath
import resource
import shutil
from pathlib import Path
from typing import Any

from roost.runtime import oci, seccomp, shim
from roost.runtime.base import Capabilities, DriverError, LaunchSpec, MachineStats
from roost.runtime.rootfs import find_executable
from roost.runtime.supervised import ShimDriver, ShimWatch, is_alive, reap_if_child

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")

_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    for path in (lower, upper, work):
        if any(c in str(path) for c in ",:\\"):
            raise DriverError(f"unsupported character in overlay path {path}")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if _libc.mount(b"overlay", bytes(target), b"overlay", 0, options.encode()) != 0:
        err = ctypes.get_errno()
        raise DriverError(f"cannot mount the rootfs overlay on {target}: {os.strerror(err)}")


def unmount_all(target: Path) -> None:
    """Unmount everything stacked on ``target``; lazily if something still holds it."""
    while os.path.ismount(target):
        if _libc.umount2(bytes(target), 0) == 0:
            continue
        err = ctypes.get_errno()
        if err != errno.EBUSY or _libc.umount2(bytes(target), _MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


def remove_cgroup(path: str) -> None:
    """rmdir the (empty) cgroup ``path`` wherever it exists, leaving the parents."""
    relative = path.lstrip("/")
    # v2: one tree; v1: one per controller (cpu and cpuacct may be the same one).
    for leaf in [CGROUP_ROOT / relative] + [c / relative for c in CGROUP_ROOT.iterdir()]:
        if leaf.is_dir():
            try:
                leaf.rmdir()
            except OSError as e:
                log.warning("cannot remove cgroup %s: %s", leaf, e)


def _cgroup_stats(cgroup: str) -> MachineStats | None:
    """From the cgroup v1 controllers (what PLATFORM.md's hosts have)."""
    relative = cgroup.lstrip("/")
    try:
        cpu_ns = int((CGROUP_ROOT / "cpuacct" / relative / "cpuacct.usage").read_text())
        memory = CGROUP_ROOT / "memory" / relative
        used = int((memory / "memory.usage_in_bytes").read_text())
        limit = int((memory / "memory.limit_in_bytes").read_text())
    except (OSError, ValueError):
        return None
    return MachineStats(cpu_ns / 1e9, used, limit)


# Debian's tini package; statically linked, so it runs in any image.
DEFAULT_INIT = Path("/usr/bin/tini-static")


class RuncDriver(ShimDriver):
    """Machines as runc containers supervised by a shim; see the module docstring."""

    name = "runc"

    def __init__(
        self,
        state_dir: Path,
        *,
        runc_root: Path,
        cgroup_parent: str,
        runc: str = "runc",
        start_timeout: float = 30.0,
        init: Path | None = DEFAULT_INIT,
        seccomp_profile: Path = seccomp.PROFILE_PATH,
    ) -> None:
        super().__init__(state_dir, start_timeout=start_timeout)
        try:
            profile = seccomp.load_profile(seccomp_profile)
            self.seccomp = seccomp.oci_seccomp(profile, oci.DEFAULT_CAPABILITIES)
        except seccomp.ProfileError as exc:
            # Machines never run without a syscall filter.
            raise DriverError(str(exc)) from None
        self.init = init if init is not None and init.exists() else None
        if self.init is None:
            log.warning(
                "no init binary (install tini): machines whose process installs no signal "
                "handlers will only stop by SIGKILL after the stop timeout"
            )
        path = shutil.which(runc)
        if path is None:
            raise DriverError(f"runc not found: {runc}")
        self.runc = path
        self.runc_root = runc_root
        self.cgroup_parent = "/" + cgroup_parent.strip("/")
        # Above our own hard limit runc would need CAP_SYS_RESOURCE, which we may lack.
        self.nofile = min(oci.NOFILE_LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        runc_root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def capabilities(self) -> Capabilities:
        return Capabilities(isolation="container", network=True, volumes=True)

    def cgroups_path(self, machine_id: str) -> str:
        return posixpath.join(self.cgroup_parent, machine_id)

    def _oom_file(self, machine_id: str) -> Path:
        relative = self.cgroups_path(machine_id).lstrip("/")
        if (CGROUP_ROOT / "memory").is_dir():
            return CGROUP_ROOT / "memory" / relative / "memory.oom_control"
        return CGROUP_ROOT / relative / "memory.events"

    async def prepare(self, spec: LaunchSpec) -> None:
        mid = spec.machine_id
        mdir = self.machine_dir(mid)
        self._check_spec(spec)
        # With tini as PID 1 a missing program would surface only as exit code 127;
        # say what is wrong before starting anything.
        program = spec.process.argv[0]
        search = spec.process.env.get("PATH", oci.DEFAULT_PATH)
        if find_executable(spec.rootfs, program, search, spec.process.cwd) is None:
            raise DriverError(
                f"executable {program!r} not found in the image (PATH={search}); "
                "check the image's entrypoint or config.init"
            )
        async with self._lock(mid):
            if self._attach(mid) is not None:
                raise DriverError(f"machine {mid} is running")
            await self._settle(mid)
            await self._delete_container(mid)
            try:
                unmount_all(mdir / "rootfs")
                layer = mdir / "layer"
                if layer.exists():
                    await asyncio.to_thread(shutil.rmtree, layer)
                (layer / "upper").mkdir(parents=True)
                (layer / "work").mkdir()
                (mdir / "rootfs").mkdir(exist_ok=True)
                (mdir / shim.BUNDLE_DIR).mkdir(exist_ok=True)
                mount_overlay(spec.rootfs, layer / "upper", layer / "work", mdir / "rootfs")
                try:
                    self._write_bundle(spec, mdir)
                except BaseException:
                    unmount_all(mdir / "rootfs")
                    raise
            except OSError as e:
                raise DriverError(f"cannot prepare machine {mid}: {e}") from e

    def _write_bundle(self, spec: LaunchSpec, mdir: Path) -> None:
        try:
            host_resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            host_resolv = ""
        (mdir / "hosts").write_text(oci.hosts_file(spec))
        (mdir / "resolv.conf").write_text(oci.resolv_conf(spec, host_resolv))
        config = oci.build_config(
            spec,
            root_path=mdir / "rootfs",
            cgroups_path=self.cgroups_path(spec.machine_id),
            hosts_path=mdir / "hosts",
            resolv_path=mdir / "resolv.conf",
            nofile=self.nofile,
            init=self.init,
            seccomp=self.seccomp,
        )
        (mdir / shim.BUNDLE_DIR / "config.json").write_text(json.dumps(config))

    def _is_prepared(self, machine_id: str) -> bool:
        mdir = self.machine_dir(machine_id)
        return (mdir / shim.BUNDLE_DIR / "config.json").exists() and os.path.ismount(
            mdir / "rootfs"
        )

    def _shim_args(self, machine_id: str) -> list[str]:
        return ["runc", self.runc, str(self.runc_root), machine_id, str(self._oom_file(machine_id))]

    def _start_error(self, machine_id: str, message: str) -> str:
        errors = []
        try:
            lines = (self.machine_dir(machine_id) / shim.RUNC_LOG).read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                errors.append(str(entry.get("msg", "")))
        return f"{message}: {'; '.join(errors)}" if errors else message

    async def _deliver(self, machine_id: str, watch: ShimWatch, signum: int) -> None:
        rc, err = await self._runc("kill", machine_id, str(signum))
        # Failing because the process just exited is fine; the shim reports the exit.
        if rc != 0 and is_alive(watch.pid, watch.pid_start_ticks) and not watch.exited.done():
            raise DriverError(f"runc kill {machine_id} {signum} failed: {err}")

    def _release(self, machine_id: str) -> None:
        mdir = self.machine_dir(machine_id)
        unmount_all(mdir / "rootfs")
        shutil.rmtree(mdir / "layer", ignore_errors=True)
        (mdir / shim.BUNDLE_DIR / "config.json").unlink(missing_ok=True)

    async def _kill_orphan(self, machine_id: str, state: dict[str, Any] | None) -> None:
        await self._delete_container(machine_id)
        # Without its shim, the container's init was re-parented to us (a subreaper).
        if state is not None and isinstance(state.get("init_pid"), int):
            reap_if_child(state["init_pid"])

    async def _remove(self, machine_id: str) -> None:
        await self._delete_container(machine_id)
        await asyncio.to_thread(self._release, machine_id)
        await asyncio.to_thread(remove_cgroup, self.cgroups_path(machine_id))

    async def _delete_container(self, machine_id: str) -> None:
        """``runc delete -f`` when runc still knows the container (no exec otherwise)."""
        if not (self.runc_root / machine_id).exists():
            return
        rc, err = await self._runc("delete", "-f", machine_id)
        if rc != 0 and (self.runc_root / machine_id).exists():
            raise DriverError(f"runc delete {machine_id} failed: {err}")

    def _exec_command(
        self, machine_id: str, argv: list[str], pid_file: Path
    ) -> tuple[list[str], dict[str, str] | None, str | None]:
        # runc exec takes the process settings of the machine's config.json (env, cwd,
        # user, capabilities, no_new_privileges) with our argv instead.
        base = [self.runc, "--root", str(self.runc_root), "exec", "--pid-file", str(pid_file)]
        return [*base, machine_id, *argv], None, None

    def _console_command(
        self, machine_id: str, argv: list[str]
    ) -> tuple[list[str], dict[str, str] | None, str | None]:
        base = [self.runc, "--root", str(self.runc_root), "exec", "--tty"]
        return [*base, machine_id, *argv], None, None

    async def stats(self, machine_id: str) -> MachineStats | None:
        watch = self._attach(machine_id)
        if watch is None or watch.exited.done():
            return None
        return await asyncio.to_thread(_cgroup_stats, self.cgroups_path(machine_id))

    async def processes(self, machine_id: str) -> list[int]:
        proc = await asyncio.create_subprocess_exec(
            self.runc,
            "--root",
            str(self.runc_root),
            "ps",
            "--format",
            "json",
            machine_id,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            return []
        try:
            return [int(pid) for pid in json.loads(out or b"[]")]
        except (ValueError, TypeError):
            return []

    async def _runc(self, *args: str) -> tuple[int, str]:
        # Only for commands that don't start a container: those would inherit the pipe.
        proc = await asyncio.create_subprocess_exec(
            self.runc,
            "--root",
            str(self.runc_root),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        return proc.returncode or 0, err.decode(errors="replace").strip()
