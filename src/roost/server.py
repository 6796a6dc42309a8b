"""``roost server``: the whole platform for one host in one process.

API + agent (+ a local image registry) over the embedded SQLite store. The same
components run as separate processes over etcd in a fleet; nothing here knows which.

Data directory layout::

    DATA/store.db          desired state (SQLite store)
    DATA/admin-token       the first admin token (0600), printed once on first start
    DATA/host-id           this host's id, stable across restarts
    DATA/agent/journal.db  the agent's run journal
    DATA/agent/machines/   per-machine runtime state (bundles, logs, exit files)
    DATA/agent/runc/       runc's state directory
    DATA/images/           image blobs and unpacked rootfs
    DATA/registry/         the local registry's storage
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from roost.agent.agent import Agent
from roost.agent.journal import Journal
from roost.agent.link import LocalHost
from roost.agent.logs import ConsoleTailer, LogStore
from roost.agent.metrics import AgentMetrics
from roost.agent.supervisor import AgentContext
from roost.agent.usage import UsageLedger
from roost.api.app import create_app
from roost.api.apps import Apps
from roost.api.auth import Authenticator
from roost.api.machine_io import MachineIO
from roost.api.machines import Machines
from roost.api.placement import Placement
from roost.api.services import Services
from roost.images.build import seed_demo_images
from roost.images.local_registry import LocalRegistry
from roost.images.registry import RegistryClient
from roost.images.store import ImageStore
from roost.metrics import Registry
from roost.net.host import HostNetwork
from roost.net.ipam import MachineAddressing
from roost.net.iproute import NetworkError
from roost.net.machine import MachineNetworks
from roost.proxy.control import LocalControl
from roost.proxy.server import Proxy, ProxyConfig, ProxyError
from roost.runtime import DriverError, RuncDriver, select_driver, set_child_subreaper
from roost.store.records import HostRecord
from roost.store.sqlite import SqliteStore

log = logging.getLogger("roost.server")


class ServerError(Exception):
    """The server cannot start; the message says why and what to do."""


def default_data_dir() -> Path:
    if env := os.environ.get("ROOST_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/roost")
    return Path.home() / ".local/share/roost"


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class ServerConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    api_listen: str = "127.0.0.1:4280"
    region: str = "local"
    host_id: str = ""
    driver: str | None = None
    registry_listen: str | None = "127.0.0.1:5000"
    seed_demo_images: bool = True
    insecure_registries: tuple[str, ...] = ()
    bridge: str = "rst0"
    v4_subnet: str = "172.30.0.0/17"
    v6_subnet: str = "fdaa:0:1::/64"
    unreachable_v4: str = "172.30.0.0/16"
    unreachable_v6: str = "fdaa::/16"
    netns_prefix: str = "rst-"
    cgroup_parent: str = "/roost"
    proxy_listen: str | None = "0.0.0.0:8080"
    proxy_tls_listen: str | None = "0.0.0.0:8443"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """Certificate and key for the proxy's HTTPS listener; unset: a self-signed one."""
    proxy_domain: str = "localhost"
    autostop_interval: float = 120.0
    cpus: int = 0
    """Schedulable CPUs; 0 = 8 per core (shared CPUs are overcommitted)."""
    memory_mb: int = 0
    """Schedulable memory; 0 = the host's memory minus 512 MB."""


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.ready = False
        self.admin_token: str | None = None
        self._stack = contextlib.AsyncExitStack()
        self._api: uvicorn.Server | None = None
        self._seeding: asyncio.Task[None] | None = None
        self._api_loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bring everything up; returns once the API accepts requests."""
        cfg = self.config
        data = cfg.data_dir
        for sub in ("agent/machines", "images", "registry"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        # Machine shims are our children; if one dies, its container must come back to
        # us rather than to a PID 1 that may never reap it.
        set_child_subreaper()

        store = SqliteStore(data / "store.db")
        await store.start()
        self._stack.push_async_callback(store.close)
        auth = Authenticator(store, static_tokens=[os.environ.get("ROOST_API_TOKEN", "")])
        await self._ensure_admin_token(auth)

        addressing = MachineAddressing(cfg.v4_subnet, cfg.v6_subnet)
        driver = select_driver(
            data / "agent/machines",
            prefer=cfg.driver,
            runc_root=data / "agent/runc",
            cgroup_parent=cfg.cgroup_parent,
        )
        self._stack.callback(driver.close)
        networks = None
        if isinstance(driver, RuncDriver):
            await HostNetwork(
                cfg.bridge, addressing, cfg.unreachable_v4, cfg.unreachable_v6
            ).setup()
            networks = MachineNetworks(cfg.bridge, addressing, cfg.netns_prefix)

        registry_addr = None
        if cfg.registry_listen:
            registry_addr = await self._start_registry(data / "registry", cfg.registry_listen)
        insecure = [*cfg.insecure_registries, *([registry_addr] if registry_addr else [])]
        client = RegistryClient(insecure=insecure)
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
            address=cfg.api_listen,
            cpus=cfg.cpus or (os.cpu_count() or 1) * 8,
            memory_mb=cfg.memory_mb or _memory_mb(),
            driver=driver.name,
        )
        agent = Agent(
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
            )
        )
        registry = Registry()
        agent.ctx.metrics = AgentMetrics(registry, driver, agent.machines)
        await agent.start()
        self._stack.push_async_callback(agent.stop)

        machines = Machines(store, Placement(store), addressing, region=cfg.region)
        services = Services(
            apps=Apps(store, machines),
            machines=machines,
            auth=auth,
            io=MachineIO(machines, LocalHost(agent, logs, usage, images)),
            metrics=registry,
        )
        self._api = await self._serve_api(create_app(services, ready=lambda: self.ready))
        if cfg.proxy_listen:
            await self._start_proxy(store, machines, registry_addr)
        if self._seeding is not None:
            await self._seeding
        self.ready = True
        log.info(
            "roost is ready: API on http://%s (driver %s, region %s, host %s)",
            cfg.api_listen,
            driver.name,
            cfg.region,
            host.id,
        )

    async def serve(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down. Machines keep running."""
        await self.start()
        assert self._api is not None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (2, 15):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        self.ready = False
        if self._api is not None:
            self._api.should_exit = True
            if self._api_loop is not None:
                await self._api_loop
            await self._api.shutdown()
            self._api = None
        await self._stack.aclose()

    async def _serve_api(self, app: Any) -> uvicorn.Server:
        host, port = split_hostport(self.config.api_listen, 4280)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ServerError(
                f"the API cannot listen on {self.config.api_listen}: {exc.strerror}; "
                "is another roost server running? (--api-listen picks another address)"
            ) from None
        sock.listen(1024)
        sock.setblocking(False)
        config = uvicorn.Config(
            app,
            loop="none",
            http="httptools",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._api_loop = asyncio.create_task(server.main_loop())
        return server

    async def _start_proxy(
        self, store: SqliteStore, machines: Machines, registry_addr: str | None
    ) -> None:
        cfg = self.config
        assert cfg.proxy_listen is not None
        reserved = {split_hostport(cfg.api_listen, 4280)[1]}
        if registry_addr:
            reserved.add(split_hostport(registry_addr, 5000)[1])
        proxy = Proxy(
            store,
            LocalControl(machines),
            ProxyConfig(
                listen=cfg.proxy_listen,
                domain=cfg.proxy_domain,
                region=cfg.region,
                autostop_interval=cfg.autostop_interval,
                reserved_ports=frozenset(reserved),
                tls_listen=cfg.proxy_tls_listen,
                tls_cert=cfg.tls_cert,
                tls_key=cfg.tls_key,
                tls_dir=cfg.data_dir / "tls",
            ),
        )
        await proxy.start()
        self._stack.push_async_callback(proxy.stop)

    def _lock_data_dir(self) -> None:
        # Two servers on one data dir would each think they own its machines.
        fd = os.open(self.config.data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ServerError(
                f"another roost server is using {self.config.data_dir}; stop it or pick "
                "another --data-dir"
            ) from None
        self._stack.callback(os.close, fd)

    async def _ensure_admin_token(self, auth: Authenticator) -> None:
        path = self.config.data_dir / "admin-token"
        if path.exists():
            self.admin_token = path.read_text().strip()
            return
        token = await auth.create_token("admin")
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        tmp.replace(path)
        self.admin_token = token
        print(
            f"\nAdmin API token (shown once; also saved to {path}):\n\n    {token}\n",
            file=sys.stderr,
            flush=True,
        )

    async def _start_registry(self, root: Path, listen: str) -> str | None:
        registry = LocalRegistry(root, listen, die_with_parent=True)
        try:
            await registry.start()
        except Exception as exc:
            log.warning("local registry not started (%s); pull images from elsewhere", exc)
            return None
        self._stack.push_async_callback(registry.stop)
        if self.config.seed_demo_images:
            self._seeding = asyncio.create_task(self._seed(registry.addr, root.parent))
        return registry.addr

    async def _seed(self, addr: str, data: Path) -> None:
        try:
            refs = await seed_demo_images(addr, data / "build")
        except Exception as exc:
            log.warning("demo images not seeded: %s", exc)
            return
        for name, ref in refs.items():
            log.info("demo image %s: %s", name, ref)


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


def run(config: ServerConfig) -> None:
    import uvloop

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per registry request drowns out what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        uvloop.run(Server(config).serve())
    except (ServerError, DriverError, NetworkError, ProxyError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
