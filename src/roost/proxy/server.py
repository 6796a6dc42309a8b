"""The proxy as one component: catalog, router, HTTP listener, TCP listeners, autostop,
and in a fleet (``host_id`` set) the backhaul listener that takes deliveries from the
other hosts' proxies, registered in the store as ``/proxies/{host_id}``."""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roost.proxy.autostop import DEFAULT_INTERVAL, Autostopper
from roost.proxy.backhaul import Backhaul, Sniffer
from roost.proxy.catalog import Catalog
from roost.proxy.control import ControlPlane
from roost.proxy.http import HttpProxy
from roost.proxy.metrics import ProxyMetrics
from roost.proxy.router import QUEUE_TIMEOUT, WAKE_TIMEOUT, Router
from roost.proxy.tcp import TcpListeners
from roost.proxy.tls import LocalAuthority, TlsError, server_context
from roost.store import Store, StoreError

log = logging.getLogger("roost.proxy")


class ProxyError(Exception):
    """The proxy cannot start; the message says why."""


@dataclass
class ProxyConfig:
    listen: str = "0.0.0.0:8080"
    domain: str = "localhost"
    region: str = "local"
    tcp_host: str = "0.0.0.0"
    autostop_interval: float = DEFAULT_INTERVAL
    wake_timeout: float = WAKE_TIMEOUT
    queue_timeout: float = QUEUE_TIMEOUT
    reserved_ports: frozenset[int] = frozenset()
    tls_listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_dir: Path | None = None
    """Where the local certificate authority lives when no cert and key are given."""
    host_id: str = ""
    """This host, in a fleet; empty: one host, every machine local, no backhaul."""
    backhaul_listen: str | None = None
    """Where to take deliveries from other hosts' proxies (``host:port``; needed with
    ``host_id``)."""
    backhaul_advertise: str | None = None
    """The address other proxies dial for that; default ``backhaul_listen``."""


class Proxy:
    def __init__(self, store: Store, control: ControlPlane, config: ProxyConfig) -> None:
        self.config = config
        self.metrics = ProxyMetrics()
        self.catalog = Catalog(store, host_id=config.host_id)
        self.router = Router(
            self.catalog,
            control,
            self.metrics,
            region=config.region,
            wake_timeout=config.wake_timeout,
            queue_timeout=config.queue_timeout,
        )
        self.host, self.port = _host_port(config.listen)
        self.tls_host, self.tls_port = (
            _host_port(config.tls_listen) if config.tls_listen else ("", None)
        )
        self.backhaul_host, self.backhaul_port = _backhaul_listen(config)
        self.http = HttpProxy(
            self.catalog,
            self.router,
            self.metrics,
            config.domain,
            config.region,
            self.port,
            https_port=self.tls_port,
        )
        self.backhaul: Backhaul | None = None
        if config.host_id:
            self.backhaul = Backhaul(
                store,
                config.host_id,
                config.region,
                self.http.pool,
                suspects=self.catalog.suspects,
                metrics=self.metrics,
            )
            self.router.remote_probe = self.backhaul.probe
            self.http.backhaul = self.backhaul
        self.https = HttpProxy(
            self.catalog,
            self.router,
            self.metrics,
            config.domain,
            config.region,
            self.tls_port or 0,
            pool=self.http.pool,
            https=True,
            backhaul=self.backhaul,
        )
        self.worker = HttpProxy(
            self.catalog,
            self.router,
            self.metrics,
            config.domain,
            config.region,
            self.backhaul_port,
            pool=self.http.pool,
            backhaul=self.backhaul,
            worker=True,
        )
        own = {self.port, self.tls_port or self.port, self.backhaul_port or self.port}
        self.tcp = TcpListeners(
            self.catalog,
            self.router,
            config.tcp_host,
            reserved=config.reserved_ports | own,
            backhaul=self.backhaul,
        )
        self.autostop = Autostopper(
            self.catalog, self.router, config.region, interval=config.autostop_interval
        )
        self._servers: list[asyncio.Server] = []
        self._deliveries: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._autostop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.catalog.start()
        try:
            if self.backhaul is not None:
                await self._start_backhaul(self.backhaul)
            self.port = await self._listen(
                self.http.protocol, self.host, self.port, None, self.config.listen
            )
            self.http.port = self.port
            if self.tls_port is not None:
                context = self._tls_context()
                assert self.config.tls_listen is not None
                self.tls_port = await self._listen(
                    self.https.protocol,
                    self.tls_host,
                    self.tls_port,
                    context,
                    self.config.tls_listen,
                )
                self.https.port = self.http.https_port = self.tls_port
        except BaseException:
            await self.stop()
            raise
        await self.tcp.start()
        self._autostop_task = asyncio.create_task(self.autostop.run(), name="proxy-autostop")
        log.info(
            "proxy listening on %s for <app>.%s (autostop every %ss)",
            self.config.listen,
            self.config.domain,
            self.config.autostop_interval,
        )

    async def _start_backhaul(self, backhaul: Backhaul) -> None:
        """Listen for deliveries, then tell the fleet where (the secret comes first: a
        delivery may arrive as soon as the record is in)."""
        try:
            await backhaul.load_secret()
        except StoreError as exc:
            raise ProxyError(f"the proxy cannot read the cluster secret: {exc}") from None
        assert self.config.backhaul_listen is not None
        self.backhaul_port = await self._listen(
            lambda: Sniffer(self.worker.protocol, self.tcp.delivery, self._deliveries),
            self.backhaul_host,
            self.backhaul_port,
            None,
            self.config.backhaul_listen,
        )
        self.worker.port = self.backhaul_port
        host = f"[{self.backhaul_host}]" if ":" in self.backhaul_host else self.backhaul_host
        advertise = self.config.backhaul_advertise or f"{host}:{self.backhaul_port}"
        try:
            await backhaul.register(advertise)
        except StoreError as exc:
            raise ProxyError(f"the proxy cannot register its backhaul: {exc}") from None
        log.info("proxy of host %s takes deliveries at %s", self.config.host_id, advertise)

    async def stop(self) -> None:
        if self.backhaul is not None:
            # First, so other proxies stop delivering here while the rest winds down.
            await self.backhaul.stop()
        if self._autostop_task is not None:
            self._autostop_task.cancel()
            await asyncio.gather(self._autostop_task, return_exceptions=True)
        await self.tcp.stop()
        for server in self._servers:
            server.close()
        self._servers.clear()
        for transport in list(self._deliveries):
            transport.close()
        self.http.pool.close()
        await self.catalog.stop()

    async def _listen(
        self,
        protocol: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        spec: str,
    ) -> int:
        """Listen; returns the port (the one the system chose, for port 0)."""
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                protocol, host, port, reuse_address=True, backlog=1024, ssl=tls
            )
        except OSError as exc:
            raise ProxyError(
                f"the proxy cannot listen on {spec}: {exc.strerror}; pick another address"
            ) from None
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def _tls_context(self) -> ssl.SSLContext:
        config = self.config
        try:
            if config.tls_cert and config.tls_key:
                return server_context(config.tls_cert, config.tls_key)
            return LocalAuthority(config.tls_dir or Path("tls"), config.domain).context()
        except TlsError as exc:
            raise ProxyError(str(exc)) from None


def _host_port(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _backhaul_listen(config: ProxyConfig) -> tuple[str, int]:
    if not config.host_id:
        return "", 0
    if not config.backhaul_listen:
        raise ProxyError(
            f"host {config.host_id} needs a backhaul address: other hosts' proxies "
            "deliver its machines' traffic there (backhaul_listen)"
        )
    host, port = _host_port(config.backhaul_listen)
    if not config.backhaul_advertise and host in ("0.0.0.0", "::"):
        raise ProxyError(
            f"the backhaul listens on {config.backhaul_listen}: give the address other "
            "hosts reach it at (backhaul_advertise)"
        )
    return host, port
