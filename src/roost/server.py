"""``roost server``: the whole platform for one host in one process.

API + agent + proxy (+ a local image registry) over the embedded SQLite store. The same
components run as separate processes over etcd in a fleet (``roost.roles``); nothing
here knows which.

Data directory layout (besides the host's own, see ``roost.roles.host``)::

    DATA/store.db          desired state (SQLite store)
    DATA/admin-token       the first admin token (0600), printed once on first start
    DATA/registry/         the local registry's storage
    DATA/tls/              the proxy's local certificate authority
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from roost.images.build import seed_demo_images
from roost.images.local_registry import LocalRegistry
from roost.metrics import Registry
from roost.net.iproute import NetworkError
from roost.proxy.control import LocalControl
from roost.proxy.server import Proxy, ProxyConfig, ProxyError
from roost.roles import serving
from roost.roles.api import API_PORT, ApiStack
from roost.roles.host import HostConfig, HostStack, lock_data_dir
from roost.roles.serving import split_hostport
from roost.runtime import DriverError
from roost.store.sqlite import SqliteStore

log = logging.getLogger("roost.server")


@dataclass
class ServerConfig(HostConfig):
    """The host's settings, and the API's, the registry's and the proxy's."""

    api_listen: str = "127.0.0.1:4280"
    registry_listen: str | None = "127.0.0.1:5000"
    seed_demo_images: bool = True
    proxy_listen: str | None = "0.0.0.0:8080"
    proxy_tls_listen: str | None = "0.0.0.0:8443"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """Certificate and key for the proxy's HTTPS listener; unset: a self-signed one."""
    proxy_domain: str = "localhost"
    autostop_interval: float = 120.0


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.ready = False
        self.admin_token: str | None = None
        self._stack = contextlib.AsyncExitStack()
        self._seeding: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bring everything up; returns once the API accepts requests."""
        cfg = self.config
        data = cfg.data_dir
        self._stack.callback(lock_data_dir(data))
        store = SqliteStore(data / "store.db")
        await store.start()
        self._stack.push_async_callback(store.close)

        registry_addr = None
        if cfg.registry_listen:
            (data / "registry").mkdir(exist_ok=True)
            registry_addr = await self._start_registry(data / "registry", cfg.registry_listen)
        insecure = (*cfg.insecure_registries, *([registry_addr] if registry_addr else []))
        metrics = Registry()
        host_config = dataclasses.replace(cfg, insecure_registries=insecure)
        host = await HostStack.start(host_config, store, metrics)
        self._stack.push_async_callback(host.close)

        api = ApiStack(store, host.link, host.addressing, metrics, region=cfg.region)
        self.admin_token = await api.admin_token(data)
        server = await api.serve(cfg.api_listen, ready=lambda: self.ready)
        self._stack.push_async_callback(server.close)
        if cfg.proxy_listen:
            await self._start_proxy(store, api, registry_addr)
        if self._seeding is not None:
            await self._seeding
        self.ready = True
        log.info(
            "roost is ready: API on http://%s (driver %s, region %s, host %s)",
            cfg.api_listen,
            host.agent.ctx.driver.name,
            cfg.region,
            host.host.id,
        )

    async def serve(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down. Machines keep running."""
        await self.start()
        try:
            await serving.until_signalled()
        finally:
            await self.stop()

    async def stop(self) -> None:
        self.ready = False
        await self._stack.aclose()

    async def _start_proxy(
        self, store: SqliteStore, api: ApiStack, registry_addr: str | None
    ) -> None:
        cfg = self.config
        assert cfg.proxy_listen is not None
        reserved = {split_hostport(cfg.api_listen, API_PORT)[1]}
        if registry_addr:
            reserved.add(split_hostport(registry_addr, 5000)[1])
        proxy = Proxy(
            store,
            LocalControl(api.machines),
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


def run(config: ServerConfig) -> None:
    serving.run(Server(config).serve, (DriverError, NetworkError, ProxyError))
