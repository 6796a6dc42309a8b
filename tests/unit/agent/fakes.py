"""In-memory stand-ins for the agent's collaborators: driver, images, networks."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.images.base import Image, ImageConfig, ImageRef, PullError
from roost.images.ref import parse_reference
from roost.runtime.base import (
    Capabilities,
    Driver,
    DriverError,
    ExecResult,
    ExitStatus,
    Inspection,
    LaunchSpec,
    MachineStats,
)
from roost.runtime.console import Console


@dataclass
class FakeProcess:
    spec: LaunchSpec
    pid: int
    exit: asyncio.Future[ExitStatus] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    signals: list[int] = field(default_factory=list)


class FakeDriver(Driver):
    """Processes are futures; tests end them with ``exit()``.

    Survives "agent restarts" the way real machines do: a new agent over the same
    FakeDriver finds running processes through ``recover``.
    """

    name = "fake"

    def capabilities(self) -> Capabilities:
        return Capabilities(isolation="none")

    def __init__(self) -> None:
        self.prepared: dict[str, LaunchSpec] = {}
        self.running: dict[str, FakeProcess] = {}
        self.exited: dict[str, ExitStatus] = {}
        self.starts: list[str] = []
        self.destroyed: list[str] = []
        self.ignore_signals: set[str] = set()
        self._pids = itertools.count(100)
        self._changed = asyncio.Condition()
        self._pending: set[asyncio.Future[None]] = set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Until the driver's state satisfies ``predicate`` (re-checked on every change)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), 5)

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        self._pending.add(asyncio.ensure_future(notify()))
        self._pending = {t for t in self._pending if not t.done()}

    def exit(self, machine_id: str, code: int, *, oom: bool = False) -> None:
        process = self.running.pop(machine_id)
        status = ExitStatus(exit_code=code, oom_killed=oom, exited_at=1.0)
        self.exited[machine_id] = status
        process.exit.set_result(status)
        self._notify()

    async def prepare(self, spec: LaunchSpec) -> None:
        assert spec.machine_id not in self.running
        self.prepared[spec.machine_id] = spec

    async def start(self, machine_id: str) -> Inspection:
        spec = self.prepared.pop(machine_id)
        process = FakeProcess(spec, next(self._pids))
        self.running[machine_id] = process
        self.exited.pop(machine_id, None)
        self.starts.append(machine_id)
        self._notify()
        return Inspection("running", pid=process.pid, started_at=1.0)

    async def wait(self, machine_id: str) -> ExitStatus:
        if machine_id in self.running:
            return await asyncio.shield(self.running[machine_id].exit)
        return self.exited[machine_id]

    async def signal(self, machine_id: str, signum: int) -> None:
        if machine_id in self.running:
            self.running[machine_id].signals.append(signum)
            self._notify()

    async def stop(self, machine_id: str, signum: int, timeout: float) -> ExitStatus | None:
        if machine_id not in self.running:
            return None
        self.running[machine_id].signals.append(signum)
        final = signal.SIGKILL if machine_id in self.ignore_signals else signum
        self.exit(machine_id, 128 + final)
        return self.exited[machine_id]

    async def destroy(self, machine_id: str) -> None:
        if machine_id in self.running:
            self.exit(machine_id, 137)
        self.exited.pop(machine_id, None)
        self.prepared.pop(machine_id, None)
        self.destroyed.append(machine_id)
        self._notify()

    async def inspect(self, machine_id: str) -> Inspection:
        if machine_id in self.running:
            return Inspection("running", pid=self.running[machine_id].pid, started_at=1.0)
        if machine_id in self.exited:
            return Inspection("exited", exit=self.exited[machine_id])
        return Inspection("absent")

    async def recover(self, machine_id: str) -> Inspection:
        return await self.inspect(machine_id)

    def known(self) -> list[str]:
        return sorted({*self.running, *self.exited, *self.prepared})

    async def exec(
        self, machine_id: str, argv: list[str], *, timeout: float, stdin: bytes = b""
    ) -> ExecResult:
        if machine_id not in self.running:
            raise DriverError(f"machine {machine_id} is not running")
        return ExecResult(0, None, " ".join(argv).encode() + stdin, b"")

    async def console(self, machine_id: str, argv: list[str], *, cols: int, rows: int) -> Console:
        raise DriverError("the fake driver has no terminals")

    async def stats(self, machine_id: str) -> MachineStats | None:
        return MachineStats(1.5, 1 << 20, 256 << 20) if machine_id in self.running else None

    async def processes(self, machine_id: str) -> list[int]:
        return [self.running[machine_id].pid] if machine_id in self.running else []

    def log_paths(self, machine_id: str) -> dict[str, Path]:
        return {"stdout": Path("/dev/null"), "stderr": Path("/dev/null")}


class FakeImages:
    def __init__(self) -> None:
        self.broken: set[str] = set()
        self.pulls: list[str] = []

    async def pull(self, ref: str) -> Image:
        self.pulls.append(ref)
        parsed = parse_reference(ref)
        if parsed.repository in self.broken:
            raise PullError(f"manifest unknown: {parsed.repository}")
        digest = parsed.digest or "sha256:" + "ab" * 32
        return Image(
            ref=ImageRef(parsed.registry, parsed.repository, parsed.tag, digest),
            rootfs=Path("/nonexistent"),
            config=ImageConfig(cmd=["/bin/app"], env=["PATH=/bin", "FROM_IMAGE=1"]),
        )


class FakeNetworks:
    def __init__(self) -> None:
        self.created: dict[str, int] = {}
        self.deleted: list[str] = []

    async def create(self, machine_id: str, index: int) -> Path:
        self.created[machine_id] = index
        return Path(f"/run/netns/fake-{machine_id}")

    async def delete(self, machine_id: str) -> None:
        self.created.pop(machine_id, None)
        self.deleted.append(machine_id)
