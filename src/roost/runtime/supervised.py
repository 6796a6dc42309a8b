"""Drivers whose machines are supervised by a per-machine shim (``shim.py``).

The shim, not the agent, is the parent of the machine's process: it records the exit
status on disk and outlives the agent. The driver watches each shim through a pidfd
and, after an agent restart, re-attaches to shims found through their state files.
It keeps one spare shim started ahead of time (see ``shim.py``), so a machine start
does not wait for a Python interpreter to start.

Per machine, in memory: a ``ShimWatch`` exists from a successful start (or re-attach)
until the driver has finished handling the shim's exit; the exit is then delivered on
``ShimWatch.exited`` and a background release (unmount, remove the writable layer) runs,
which ``prepare``/``start``/``destroy`` wait for. On disk (``state_dir/<id>/``):
``shim.json`` (the shim's pid and start time, the process's pid) and ``exit.json``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ctypes
import itertools
import json
import logging
import os
import py_compile
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.runtime import shim
from roost.runtime.base import (
    Driver,
    DriverError,
    ExecResult,
    ExitStatus,
    Inspection,
    LaunchSpec,
    MachineNotPrepared,
)
from roost.runtime.console import Console, open_console

log = logging.getLogger(__name__)

SHIM_SCRIPT = Path(shim.__file__)
# The base interpreter, not a venv's: the shim is stdlib-only and starts a bit faster.
SHIM_PYTHON = os.path.realpath(sys.executable)
SPARE_LOG = ".shim.log"
"""Output of spare shims before they get a machine (in the state dir)."""

KILL_TIMEOUT = 10.0
"""How long a SIGKILLed machine may take to be reported exited before we give up."""

LOST_EXIT_CODE = 255
EXEC_KILL_GRACE = 5.0

_PR_SET_CHILD_SUBREAPER = 36

_MACHINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(slots=True)
class _Spare:
    """A shim started ahead of time, waiting on its command pipe for a machine."""

    pid: int
    command_fd: int
    notify_fd: int


@dataclass(slots=True)
class ShimWatch:
    """A shim we watch through a pidfd, from start (or re-attach) until its exit is handled."""

    shim_pid: int
    pidfd: int
    our_child: bool
    """Spawned by this process (or re-parented to it): we must reap it."""
    pid: int | None
    """The machine's main process (the container's init)."""
    pid_start_ticks: int | None
    started_at: float | None
    exited: asyncio.Future[ExitStatus]
    loop: asyncio.AbstractEventLoop


def compile_shim(directory: Path) -> Path:
    """The shim as a ``.pyc`` in ``directory``: running it skips a ~5 ms compile per start.

    Rewritten on every driver start, so it always matches the source.
    """
    target = directory / f".shim.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(
        str(SHIM_SCRIPT),
        cfile=str(target),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    return target


def set_child_subreaper(enabled: bool = True) -> None:
    """Make this process (the agent) adopt orphaned descendants, so it can reap them.

    A shim whose agent died is re-parented to the nearest subreaper; without one it goes
    to PID 1, which may never reap it. Call once at agent start-up.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_exit(path: Path) -> ExitStatus | None:
    data = read_json(path)
    if data is None:
        return None
    try:
        return ExitStatus(
            exit_code=int(data["exit_code"]),
            signal=None if data.get("signal") is None else int(data["signal"]),
            oom_killed=bool(data.get("oom_killed", False)),
            exited_at=float(data.get("exited_at", 0.0)),
            lost=bool(data.get("lost", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def write_exit(path: Path, status: ExitStatus) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "exit_code": status.exit_code,
                "signal": status.signal,
                "oom_killed": status.oom_killed,
                "exited_at": status.exited_at,
                "lost": status.lost,
            }
        )
    )
    tmp.replace(path)


def is_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``start_ticks`` and not a zombie."""
    if pid is None or start_ticks is None:
        return False
    stat = shim.proc_stat(pid)
    return stat is not None and stat[2] == start_ticks and stat[0] not in ("Z", "X")


def reap_if_child(pid: int) -> None:
    """Reap ``pid`` if it is our exited child (the agent is a subreaper; PID 1 may not reap)."""
    stat = shim.proc_stat(pid)
    if stat is None or stat[1] != os.getpid():
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def send_signal(pid: int | None, start_ticks: int | None, signum: int) -> bool:
    """Signal ``pid`` only if it is still the process that started at ``start_ticks``.

    Opening a pidfd first and checking the start time after makes this immune to pid
    reuse. False if that process is gone.
    """
    if pid is None:
        return False
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if not is_alive(pid, start_ticks):
            return False
        signal.pidfd_send_signal(fd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


async def _read_to_eof(fd: int) -> str:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    chunks: list[bytes] = []

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(b"".join(chunks).decode(errors="replace"))

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


async def _pidfd_exited(pidfd: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)


class ShimDriver(Driver):
    """Spawning, watching, signalling and re-attaching shims; subclasses lay machines out."""

    def __init__(self, state_dir: Path, *, start_timeout: float = 30.0) -> None:
        self.state_dir = state_dir
        self.start_timeout = start_timeout
        state_dir.mkdir(parents=True, exist_ok=True)
        self._shim = compile_shim(state_dir)
        self._watches: dict[str, ShimWatch] = {}
        self._releases: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._finishers: set[asyncio.Task[None]] = set()
        self._spare: _Spare | None = None
        self._closed = False

    # -- what subclasses provide ------------------------------------------------------

    @abc.abstractmethod
    def _shim_args(self, machine_id: str) -> list[str]:
        """The shim command: the mode, then its arguments after ``MACHINE_DIR``."""

    @abc.abstractmethod
    def _is_prepared(self, machine_id: str) -> bool: ...

    @abc.abstractmethod
    async def _deliver(self, machine_id: str, watch: ShimWatch, signum: int) -> None:
        """Send ``signum`` to the machine's main process."""

    @abc.abstractmethod
    def _release(self, machine_id: str) -> None:
        """After an exit (in a thread): free what the stopped machine held (mounts, layer)."""

    @abc.abstractmethod
    async def _kill_orphan(self, machine_id: str, state: dict[str, Any] | None) -> None:
        """The shim is gone without an exit file: kill whatever of the machine survived."""

    @abc.abstractmethod
    async def _remove(self, machine_id: str) -> None:
        """``destroy``, once nothing runs: remove what lives outside the machine dir."""

    def _start_error(self, machine_id: str, message: str) -> str:
        """The user-facing reason for a failed start, from the shim's message."""
        return message

    # -- paths ------------------------------------------------------------------------

    @abc.abstractmethod
    def _exec_command(
        self, machine_id: str, argv: list[str], pid_file: Path
    ) -> tuple[list[str], dict[str, str] | None, str | None]:
        """(command, env, cwd) running ``argv`` in the machine, its pid into ``pid_file``."""

    async def exec(
        self, machine_id: str, argv: list[str], *, timeout: float, stdin: bytes = b""
    ) -> ExecResult:
        if not argv:
            raise DriverError("exec needs a command")
        watch = self._attach(machine_id)
        if watch is None or watch.exited.done():
            raise DriverError(f"machine {machine_id} is not running")
        pid_file = self.machine_dir(machine_id) / f"exec-{os.getpid()}-{next(_exec_ids)}.pid"
        command, env, cwd = self._exec_command(machine_id, argv, pid_file)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise DriverError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        timed_out = False
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            timed_out = True
            out, err = await _end_exec(proc, pid_file)
        finally:
            pid_file.unlink(missing_ok=True)
        code = proc.returncode if proc.returncode is not None else 255
        if code < 0:
            code, sig = 128 - code, -code
        else:
            sig = code - 128 if code > 128 else None
        return ExecResult(code, sig, out, err, timed_out)

    @abc.abstractmethod
    def _console_command(
        self, machine_id: str, argv: list[str]
    ) -> tuple[list[str], dict[str, str] | None, str | None]:
        """(command, env, cwd) running ``argv`` in the machine on the terminal it is given."""

    async def console(self, machine_id: str, argv: list[str], *, cols: int, rows: int) -> Console:
        watch = self._attach(machine_id)
        if watch is None or watch.exited.done():
            raise DriverError(f"machine {machine_id} is not running")
        command, env, cwd = self._console_command(machine_id, argv)
        return await open_console(command, env, cwd, cols, rows)

    def _check_spec(self, spec: LaunchSpec) -> None:
        if not spec.process.argv:
            raise DriverError(f"machine {spec.machine_id} has no command to run")
        if not spec.rootfs.is_dir():
            raise DriverError(f"image rootfs {spec.rootfs} is not a directory")

    def machine_dir(self, machine_id: str) -> Path:
        if not _MACHINE_ID.fullmatch(machine_id):
            raise DriverError(f"invalid machine id {machine_id!r}")
        return self.state_dir / machine_id

    def log_paths(self, machine_id: str) -> dict[str, Path]:
        mdir = self.machine_dir(machine_id)
        return {"stdout": mdir / shim.STDOUT_LOG, "stderr": mdir / shim.STDERR_LOG}

    def known(self) -> list[str]:
        return sorted(
            p.name for p in self.state_dir.iterdir() if p.is_dir() and _MACHINE_ID.fullmatch(p.name)
        )

    def _lock(self, machine_id: str) -> asyncio.Lock:
        return self._locks.setdefault(machine_id, asyncio.Lock())

    # -- the contract -----------------------------------------------------------------

    async def start(self, machine_id: str) -> Inspection:
        mdir = self.machine_dir(machine_id)
        async with self._lock(machine_id):
            if self._attach(machine_id) is not None:
                raise DriverError(f"machine {machine_id} is already running")
            await self._settle(machine_id)
            if not self._is_prepared(machine_id):
                raise MachineNotPrepared(f"machine {machine_id} is not prepared")
            for name in (shim.EXIT_FILE, shim.STATE_FILE, shim.PID_FILE, shim.RUNC_LOG):
                (mdir / name).unlink(missing_ok=True)
            return await self._spawn(machine_id, mdir)

    async def wait(self, machine_id: str) -> ExitStatus:
        watch = self._attach(machine_id)
        if watch is not None:
            return await asyncio.shield(watch.exited)
        status = read_exit(self.machine_dir(machine_id) / shim.EXIT_FILE)
        if status is None:
            raise DriverError(f"machine {machine_id} is not running")
        return status

    async def signal(self, machine_id: str, signum: int) -> None:
        watch = self._attach(machine_id)
        if watch is not None and not watch.exited.done():
            await self._deliver(machine_id, watch, signum)

    async def stop(self, machine_id: str, signum: int, timeout: float) -> ExitStatus | None:
        watch = self._attach(machine_id)
        if watch is None:
            return None
        if not watch.exited.done():
            await self._deliver(machine_id, watch, signum)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(watch.exited), timeout)
            await self._kill(machine_id, watch)
        return await asyncio.shield(watch.exited)

    async def destroy(self, machine_id: str) -> None:
        mdir = self.machine_dir(machine_id)
        async with self._lock(machine_id):
            watch = self._attach(machine_id)
            if watch is not None:
                if not watch.exited.done():
                    await self._kill(machine_id, watch)
                await asyncio.shield(watch.exited)
            await self._settle(machine_id)
            await self._remove(machine_id)
            await asyncio.to_thread(shutil.rmtree, mdir, ignore_errors=True)
        self._locks.pop(machine_id, None)

    async def inspect(self, machine_id: str) -> Inspection:
        mdir = self.machine_dir(machine_id)
        watch = self._watches.get(machine_id)
        if watch is not None and not watch.exited.done():
            return Inspection("running", watch.pid, watch.started_at)
        state = read_json(mdir / shim.STATE_FILE)
        if state is not None and is_alive(state.get("pid"), state.get("start_ticks")):
            return Inspection("running", state.get("init_pid"), state.get("started_at"))
        status = read_exit(mdir / shim.EXIT_FILE)
        if status is not None:
            return Inspection("exited", exit=status)
        return Inspection("absent")

    async def recover(self, machine_id: str) -> Inspection:
        mdir = self.machine_dir(machine_id)
        async with self._lock(machine_id):
            watch = self._attach(machine_id)
            if watch is not None:
                stat = shim.proc_stat(watch.shim_pid)
                if stat is not None and stat[0] not in ("Z", "X") and not watch.exited.done():
                    return Inspection("running", watch.pid, watch.started_at)
                return Inspection("exited", exit=await asyncio.shield(watch.exited))
            status = read_exit(mdir / shim.EXIT_FILE)
            state = read_json(mdir / shim.STATE_FILE)
            if status is None and state is not None:
                status = await self._lost(machine_id, state)
            if status is None:
                return Inspection("absent")
            self._schedule_release(machine_id)
            return Inspection("exited", exit=status)

    def close(self) -> None:
        self._closed = True
        if self._spare is not None:
            _discard(self._spare)
            self._spare = None
        for watch in self._watches.values():
            watch.loop.remove_reader(watch.pidfd)
            os.close(watch.pidfd)
            if not watch.exited.done():
                watch.exited.set_exception(DriverError("driver closed"))
                # Nobody may be waiting; don't log "exception never retrieved".
                watch.exited.exception()
        self._watches.clear()

    # -- internals --------------------------------------------------------------------

    async def _spawn(self, machine_id: str, mdir: Path) -> Inspection:
        args = self._shim_args(machine_id)
        command = "\0".join([args[0], str(mdir), *args[1:]]).encode()
        try:
            spare = self._take_spare()
        except OSError as e:
            raise DriverError(f"cannot spawn the shim: {e}") from e
        shim_pid, read_fd = spare.pid, spare.notify_fd
        try:
            _write_all(spare.command_fd, command)
        except BrokenPipeError:
            log.warning("machine %s: the shim died before its command", machine_id)
        finally:
            os.close(spare.command_fd)
        pidfd = os.pidfd_open(shim_pid)
        try:
            message = await asyncio.wait_for(_read_to_eof(read_fd), self.start_timeout)
        except TimeoutError:
            message = f"error timed out after {self.start_timeout:g}s"
            os.kill(shim_pid, signal.SIGKILL)
        except BaseException:
            # Cancelled: the shim carries on; ``_attach`` finds it through shim.json.
            os.close(pidfd)
            raise
        finally:
            os.close(read_fd)
        # Not earlier: a starting interpreter would compete with runc for the CPU.
        asyncio.get_running_loop().call_soon(self._replenish)
        word, _, rest = message.strip().partition(" ")
        if word == "running":
            pid_text, _, started_text = rest.partition(" ")
            state = read_json(mdir / shim.STATE_FILE) or {}
            watch = self._watch(
                machine_id,
                shim_pid,
                pidfd,
                our_child=True,
                pid=int(pid_text),
                pid_start_ticks=state.get("init_start_ticks"),
                started_at=float(started_text),
            )
            return Inspection("running", watch.pid, watch.started_at)

        try:
            await asyncio.wait_for(_pidfd_exited(pidfd), KILL_TIMEOUT)
        finally:
            os.close(pidfd)
        reap_if_child(shim_pid)
        if word != "error":
            rest = "the shim exited unexpectedly"
            log.error(
                "%s: %s; shim logs:\n%s\n%s",
                machine_id,
                rest,
                _tail(self.state_dir / SPARE_LOG),
                _tail(mdir / shim.SHIM_LOG),
            )
        await self._kill_orphan(machine_id, read_json(mdir / shim.STATE_FILE))
        (mdir / shim.STATE_FILE).unlink(missing_ok=True)
        await asyncio.to_thread(self._release, machine_id)
        raise DriverError(self._start_error(machine_id, rest))

    def _new_spare(self) -> _Spare:
        notify_r, notify_w = os.pipe()
        command_r, command_w = os.pipe()
        try:
            pid = _spawn_shim(
                [SHIM_PYTHON, "-I", "-S", str(self._shim)],
                self.state_dir / SPARE_LOG,
                notify_w,
                command_r,
            )
        except OSError:
            os.close(notify_r)
            os.close(command_w)
            raise
        finally:
            os.close(notify_w)
            os.close(command_r)
        return _Spare(pid, command_w, notify_r)

    def _take_spare(self) -> _Spare:
        """The waiting spare shim if it is still alive, else a new one."""
        spare, self._spare = self._spare, None
        if spare is not None:
            stat = shim.proc_stat(spare.pid)
            if stat is not None and stat[0] not in ("Z", "X"):
                return spare
            _discard(spare)
        return self._new_spare()

    def _replenish(self) -> None:
        if self._spare is None and not self._closed:
            try:
                self._spare = self._new_spare()
            except OSError:
                log.exception("cannot start a spare shim")

    def _watch(
        self,
        machine_id: str,
        shim_pid: int,
        pidfd: int,
        *,
        our_child: bool,
        pid: int | None,
        pid_start_ticks: int | None,
        started_at: float | None,
    ) -> ShimWatch:
        loop = asyncio.get_running_loop()
        watch = ShimWatch(
            shim_pid=shim_pid,
            pidfd=pidfd,
            our_child=our_child,
            pid=pid,
            pid_start_ticks=pid_start_ticks,
            started_at=started_at,
            exited=loop.create_future(),
            loop=loop,
        )
        self._watches[machine_id] = watch
        loop.add_reader(pidfd, self._shim_exited, machine_id, watch)
        return watch

    def _attach(self, machine_id: str) -> ShimWatch | None:
        """The watch on the machine's shim, re-attaching to a live one found on disk."""
        watch = self._watches.get(machine_id)
        if watch is not None:
            return watch
        mdir = self.machine_dir(machine_id)
        state = read_json(mdir / shim.STATE_FILE)
        if state is None:
            return None
        shim_pid, ticks = state.get("pid"), state.get("start_ticks")
        stat = shim.proc_stat(shim_pid) if isinstance(shim_pid, int) else None
        if stat is None or stat[2] != ticks:
            return None
        try:
            pidfd = os.pidfd_open(shim_pid)
        except ProcessLookupError:
            return None
        # Checked again with the pidfd held: it now pins this very process.
        stat = shim.proc_stat(shim_pid)
        if stat is None or stat[2] != ticks:
            os.close(pidfd)
            return None
        # A zombie shim is attached too: its pidfd is readable at once and the exit is
        # handled like any other.
        return self._watch(
            machine_id,
            shim_pid,
            pidfd,
            our_child=stat[1] == os.getpid(),
            pid=state.get("init_pid"),
            pid_start_ticks=state.get("init_start_ticks"),
            started_at=state.get("started_at"),
        )

    def _shim_exited(self, machine_id: str, watch: ShimWatch) -> None:
        watch.loop.remove_reader(watch.pidfd)
        os.close(watch.pidfd)
        if watch.our_child:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(watch.shim_pid, 0)
        task = watch.loop.create_task(self._finish(machine_id, watch))
        self._finishers.add(task)
        task.add_done_callback(self._finishers.discard)

    async def _finish(self, machine_id: str, watch: ShimWatch) -> None:
        mdir = self.machine_dir(machine_id)
        status = read_exit(mdir / shim.EXIT_FILE)
        if status is None:
            status = await self._lost(machine_id, read_json(mdir / shim.STATE_FILE))
        # The exit is on disk now. A shim that was not our child may linger as a zombie
        # until its new parent reaps it; its state file must not bring it back to life.
        (mdir / shim.STATE_FILE).unlink(missing_ok=True)
        if self._watches.get(machine_id) is watch:
            del self._watches[machine_id]
        self._schedule_release(machine_id)
        if not watch.exited.done():
            watch.exited.set_result(status)

    async def _lost(self, machine_id: str, state: dict[str, Any] | None) -> ExitStatus:
        log.warning("machine %s: its shim vanished without recording an exit", machine_id)
        # Whatever fails here, waiters must get an answer.
        try:
            await self._kill_orphan(machine_id, state)
        except Exception:
            log.exception("machine %s: cannot kill what its shim left", machine_id)
        status = ExitStatus(exit_code=LOST_EXIT_CODE, exited_at=time.time(), lost=True)
        try:
            write_exit(self.machine_dir(machine_id) / shim.EXIT_FILE, status)
        except OSError:
            log.exception("machine %s: cannot record the lost exit", machine_id)
        return status

    async def _kill(self, machine_id: str, watch: ShimWatch) -> None:
        await self._deliver(machine_id, watch, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(watch.exited), KILL_TIMEOUT)
        except TimeoutError:
            raise DriverError(
                f"machine {machine_id} did not exit {KILL_TIMEOUT:g}s after SIGKILL"
            ) from None

    def _schedule_release(self, machine_id: str) -> None:
        async def release() -> None:
            try:
                await asyncio.to_thread(self._release, machine_id)
            except Exception:
                log.exception("machine %s: cleanup after exit failed", machine_id)

        if machine_id not in self._releases:
            task = asyncio.get_running_loop().create_task(release())
            self._releases[machine_id] = task
            task.add_done_callback(lambda _: self._releases.pop(machine_id, None))

    async def _settle(self, machine_id: str) -> None:
        """Wait for the cleanup after the last exit, so the next step sees a quiet machine."""
        task = self._releases.get(machine_id)
        if task is not None:
            await asyncio.shield(task)


_exec_ids = itertools.count(1)


def _read_pid(path: Path) -> int:
    return int(path.read_text().strip())


async def _end_exec(proc: asyncio.subprocess.Process, pid_file: Path) -> tuple[bytes, bytes]:
    """End a timed-out exec: kill the process inside the machine and let its runner reap
    it. Killing the runner first would orphan the process to us (a subreaper) as a
    zombie inside the machine's PID namespace, which then could never finish exiting."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(_read_pid(pid_file), signal.SIGKILL)
    try:
        return await asyncio.wait_for(proc.communicate(), EXEC_KILL_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return await proc.communicate()


def _spawn_shim(argv: list[str], log_path: Path, notify_fd: int, command_fd: int) -> int:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        return os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
                # dup2 into the child only: the pipes stay close-on-exec here, so no
                # other process spawned meanwhile can hold them open.
                (os.POSIX_SPAWN_DUP2, notify_fd, shim.NOTIFY_FD),
                (os.POSIX_SPAWN_DUP2, command_fd, shim.COMMAND_FD),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _discard(spare: _Spare) -> None:
    """Kill and reap a spare shim: it has no machine yet."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(spare.pid, signal.SIGKILL)
    os.close(spare.command_fd)
    os.close(spare.notify_fd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(spare.pid, 0)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    return data[-limit:].decode(errors="replace")
