"""One host's share of the platform: the agent and everything it runs machines with.

Used by ``roost server`` (with the API in the same process) and by ``roost agent``
(alone, over etcd). Host state lives under the data directory::

    DATA/host-id           this host's id, stable across restarts
    DATA/agent/journal.db  the agent's run journal
    DATA/agent/machines/   per-machine runtime state (bundles, logs, exit files)
    DATA/agent/runc/       runc's state directory
    DATA/agent/logs/       machine logs
    DATA/images/           image blobs and unpacked rootfs
    DATA/volumes/          volume images, their mounts and snapshots (roost.volumes.images)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.agent.agent import ALIVE_TTL, Agent
from roost.agent.journal import Journal
from roost.agent.link import LocalHost
from roost.agent.logs import ConsoleTailer, LogStore
from roost.agent.metrics import AgentMetrics
from roost.agent.supervisor import AgentContext
from roost.agent.usage import UsageLedger
from roost.agent.volumes import RemoteSnapshots, VolumeAgent
from roost.images.registry import RegistryClient
from roost.images.store import ImageStore
from roost.metrics import Registry
from roost.net.host import HostNetwork
from roost.net.ipam import MachineAddressing
from roost.net.machine import MachineNetworks
from roost.roles.serving import RoleError
from roost.runtime import Driver, select_driver, set_child_subreaper
from roost.spec.config import SHARED_CPUS_PER_CORE
from roost.store import Store
from roost.store.records import HostRecord
from roost.volumes import images as volume_images

log = logging.getLogger("roost.agent")


def default_data_dir() -> Path:
    if env := os.environ.get("ROOST_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/roost")
    return Path.home() / ".local/share/roost"


@dataclass
class HostConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    region: str = "local"
    region_aliases: tuple[str, ...] = ()
    """Other region names placement sends here (e.g. Fly codes clients ask for)."""
    host_id: str = ""
    driver: str | None = None
    insecure_registries: tuple[str, ...] = ()
    bridge: str = "rst0"
    v4_subnet: str = "172.30.0.0/17"
    v6_subnet: str = "fdaa:0:1::/64"
    unreachable_v4: str = "172.30.0.0/16"
    unreachable_v6: str = "fdaa::/16"
    netns_prefix: str = "rst-"
    cgroup_parent: str = "/roost"
    cpus: int = 0
    """Schedulable CPUs; 0 = 8 per core (shared CPUs are overcommitted)."""
    memory_mb: int = 0
    """Schedulable memory; 0 = the host's memory minus 512 MB."""
    disk_gb: int = 0
    """Room for volumes; 0 = the free space of the data dir's filesystem."""
    endpoint: str = ""
    """Where the API reaches this host's agent (``host:port``); empty in one process."""
    alive_ttl: float = ALIVE_TTL


class HostStack:
    """Build with ``await HostStack.start(config, store, metrics)`` while holding the data
    dir (``lock_data_dir``); ``close()`` stops supervising (machines keep running) and
    releases everything else."""

    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self._stack = contextlib.AsyncExitStack()
        self.agent: Agent
        self.link: LocalHost
        self.volume_files: volume_images.LoopVolumes | None = None
        """Where this host's volume snapshots are read from, for other hosts."""
        self.addressing = MachineAddressing(config.v4_subnet, config.v6_subnet)

    @classmethod
    async def start(cls, config: HostConfig, store: Store, metrics: Registry) -> HostStack:
        stack = cls(config)
        try:
            await stack._start(store, metrics)
        except BaseException:
            await stack.close()
            raise
        return stack

    async def _start(self, store: Store, metrics: Registry) -> None:
        cfg = self.config
        data = cfg.data_dir
        for sub in ("agent/machines", "images"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        # Machine shims are our children; if one dies, its container must come back to
        # us rather than to a PID 1 that may never reap it.
        set_child_subreaper()

        driver = select_driver(
            data / "agent/machines",
            prefer=cfg.driver,
            runc_root=data / "agent/runc",
            cgroup_parent=cfg.cgroup_parent,
        )
        self._stack.callback(driver.close)
        networks = None
        if driver.capabilities().network:
            await HostNetwork(
                cfg.bridge,
                self.addressing,
                cfg.unreachable_v4,
                cfg.unreachable_v6,
                owner=str(data.resolve()),
            ).setup()
            networks = MachineNetworks(cfg.bridge, self.addressing, cfg.netns_prefix)
            if volume_images.supported():
                self.volume_files = volume_images.LoopVolumes(data / "volumes")
            else:
                log.warning(
                    "this host keeps no volumes: they need %s", ", ".join(volume_images.TOOLS)
                )

        client = RegistryClient(insecure=list(cfg.insecure_registries))
        self._stack.push_async_callback(client.aclose)
        images = ImageStore(data / "images", client=client)
        self._stack.push_async_callback(images.aclose)
        await images.cleanup()

        journal = Journal(data / "agent/journal.db")
        self._stack.callback(journal.close)
        logs = LogStore(data / "agent/logs")
        usage = UsageLedger(data / "agent/usage.db")
        self._stack.callback(usage.close)
        host = HostRecord(
            id=cfg.host_id or _host_id(data),
            region=cfg.region,
            region_aliases=sorted({a.strip().lower() for a in cfg.region_aliases} - {""}),
            address=cfg.endpoint,
            cpus=cfg.cpus or (os.cpu_count() or 1) * SHARED_CPUS_PER_CORE,
            memory_mb=cfg.memory_mb or _memory_mb(),
            driver=driver.name,
        )
        volumes = None
        if self.volume_files is not None:
            host.disk_gb = cfg.disk_gb or self.volume_files.capacity_gb()
            host.online_resize = volume_images.online_resize()
            source = RemoteSnapshots(store)
            self._stack.push_async_callback(source.aclose)
            volumes = VolumeAgent(
                store, host, self.volume_files, running=_running(driver), source=source
            )
        self.agent = Agent(
            AgentContext(
                store=store,
                driver=driver,
                images=images,
                networks=networks,
                journal=journal,
                host=host,
                clock=time.time,
                logs=logs,
                tailer=ConsoleTailer(logs),
                usage=usage,
                volumes=volumes,
            ),
            alive_ttl=cfg.alive_ttl,
        )
        self.agent.ctx.metrics = AgentMetrics(metrics, driver, self.agent.machines)
        await self.agent.start()
        self._stack.push_async_callback(self.agent.stop)
        self.link = LocalHost(self.agent, logs, usage, images)

    @property
    def host(self) -> HostRecord:
        return self.agent.host

    async def close(self) -> None:
        await self._stack.aclose()


def lock_data_dir(data_dir: Path) -> Callable[[], None]:
    """Hold the data directory for this process; returns what releases it."""
    # Two processes on one data dir would each think they own its machines.
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RoleError(
            f"another roost process is using {data_dir}; stop it or pick another --data-dir"
        ) from None
    return lambda: os.close(fd)


def _running(driver: Driver) -> Callable[[str], Awaitable[bool]]:
    async def running(machine_id: str) -> bool:
        return (await driver.inspect(machine_id)).state == "running"

    return running


def _host_id(data: Path) -> str:
    path = data / "host-id"
    if path.exists():
        return path.read_text().strip()
    name = "".join(c for c in socket.gethostname().lower() if c.isalnum() or c == "-")[:20]
    host_id = f"{name or 'host'}-{secrets.token_hex(3)}"
    path.write_text(host_id + "\n")
    return host_id


def _memory_mb() -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    return max(256, total - 512)
