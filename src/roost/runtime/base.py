"""The Driver contract: one machine's process tree, as small as Nomad's task drivers.

The agent owns *when* things happen (durable runs, restart policy); a driver owns *how*
a machine's process is laid out, started, signalled, observed and removed. Drivers are
keyed by machine id and keep everything they need on disk under their own state
directory, so that after an agent restart ``recover`` re-attaches to machines that kept
running (a per-machine shim outlives the agent) instead of killing or duplicating them.

Lifecycle of one start::

    prepare(spec) ──▶ start(id) ──▶ running ──(exit | stop | signal)──▶ exited
        ▲                                                                 │
        └───────────────── next start: prepare again (blank rootfs) ◀─────┘
    destroy(id) from any point removes the process (SIGKILL) and all on-disk state.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from roost.runtime.console import Console


class DriverError(Exception):
    """A driver operation failed; the message is fit to show a user in a machine event."""


class MachineNotPrepared(DriverError):
    """``start`` was called for a machine without a prepared bundle."""


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: int = 1
    memory_mb: int = 256
    cpu_kind: Literal["shared", "performance"] = "shared"
    pids_limit: int = 4096


@dataclass(frozen=True, slots=True)
class Mount:
    source: Path
    destination: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything needed to start one instance of a machine."""

    machine_id: str
    rootfs: Path
    """The unpacked image: read-only; the driver lays a fresh writable layer over it."""
    process: ProcessSpec
    resources: Resources = field(default_factory=Resources)
    hostname: str = ""
    netns: Path | None = None
    """A prepared network namespace to join (``/run/netns/NAME``); None = the host's."""
    mounts: tuple[Mount, ...] = ()
    dns_servers: tuple[str, ...] = ()
    """``/etc/resolv.conf`` nameservers; empty = the host's, minus loopback ones."""
    extra_hosts: tuple[tuple[str, str], ...] = ()
    """``(address, names)`` lines appended to the machine's ``/etc/hosts``."""


@dataclass(frozen=True, slots=True)
class ExitStatus:
    exit_code: int
    """The process's exit code; ``128 + signal`` when it was killed by a signal."""
    signal: int | None = None
    oom_killed: bool = False
    exited_at: float = 0.0
    """Unix seconds."""
    lost: bool = False
    """The supervisor vanished without recording the exit (e.g. it was SIGKILLed): the
    real status is unknown, ``exit_code`` is 255 and whatever was left was killed."""


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    signal: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class MachineStats:
    cpu_seconds: float
    """CPU time used since the machine started."""
    memory_bytes: int
    memory_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Inspection:
    state: Literal["running", "exited", "absent"]
    """``absent``: nothing prepared or started; ``exited``: ran and ended (see ``exit``)."""
    pid: int | None = None
    started_at: float | None = None
    exit: ExitStatus | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver's machines get, so callers ask instead of checking driver types
    (a microVM driver will answer differently: see docs/microvm-driver.md)."""

    isolation: Literal["none", "container", "microvm"]
    network: bool = False
    """Each machine in a network namespace of its own on the host bridge."""
    volumes: bool = False
    """Host volumes can be mounted into machines."""
    suspend: bool = False
    """Suspend keeps a machine's memory and processes (else it is a stop)."""
    memory_hot_update: bool = False
    """A running machine's memory limit changes without a restart."""


class Driver(abc.ABC):
    name: str

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this driver's machines get on this host."""

    @abc.abstractmethod
    async def prepare(self, spec: LaunchSpec) -> None:
        """Lay out a blank writable rootfs and the runtime config for the next start.

        Discards whatever a previous start left behind. Idempotent. Fails with
        :class:`DriverError` if the machine is running.
        """

    @abc.abstractmethod
    async def start(self, machine_id: str) -> Inspection:
        """Start the prepared machine; returns once its process is running."""

    @abc.abstractmethod
    async def wait(self, machine_id: str) -> ExitStatus:
        """Until the running (or recovered) process exits. Several waiters may wait."""

    @abc.abstractmethod
    async def signal(self, machine_id: str, signum: int) -> None:
        """Deliver a signal to the machine's main process. No-op if not running."""

    @abc.abstractmethod
    async def stop(self, machine_id: str, signum: int, timeout: float) -> ExitStatus | None:
        """Signal, wait up to ``timeout`` seconds, then SIGKILL. None if it was not running."""

    @abc.abstractmethod
    async def destroy(self, machine_id: str) -> None:
        """Kill (if running) and remove every trace of the machine. Idempotent."""

    @abc.abstractmethod
    async def inspect(self, machine_id: str) -> Inspection: ...

    @abc.abstractmethod
    async def recover(self, machine_id: str) -> Inspection:
        """Re-attach to a machine after an agent restart so ``wait``/``stop`` work again."""

    @abc.abstractmethod
    def known(self) -> list[str]:
        """Ids of machines with on-disk state, for adopting or reaping after a restart."""

    @abc.abstractmethod
    async def exec(
        self, machine_id: str, argv: list[str], *, timeout: float, stdin: bytes = b""
    ) -> ExecResult:
        """Run a command inside the running machine (its namespaces, limits, env)."""

    @abc.abstractmethod
    async def console(self, machine_id: str, argv: list[str], *, cols: int, rows: int) -> Console:
        """An interactive process on a terminal inside the running machine."""

    @abc.abstractmethod
    async def stats(self, machine_id: str) -> MachineStats | None:
        """CPU and memory use of the running machine; None when it is not running."""

    @abc.abstractmethod
    async def processes(self, machine_id: str) -> list[int]:
        """Host pids of the running machine's processes (empty when not running)."""

    @abc.abstractmethod
    def log_paths(self, machine_id: str) -> dict[str, Path]:
        """Where the machine's output is appended: ``{"stdout": path, "stderr": path}``."""

    def close(self) -> None:  # noqa: B027 (optional: nothing to release by default)
        """Stop watching machines (agent shutdown); they keep running for ``recover``."""
