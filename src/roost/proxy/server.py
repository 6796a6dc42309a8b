"""The proxy as one component: catalog, router, HTTP listener, TCP listeners, autostop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from roost.proxy.autostop import DEFAULT_INTERVAL, Autostopper
from roost.proxy.catalog import Catalog
from roost.proxy.control import ControlPlane
from roost.proxy.http import HttpProxy
from roost.proxy.metrics import ProxyMetrics
from roost.proxy.router import QUEUE_TIMEOUT, WAKE_TIMEOUT, Router
from roost.proxy.tcp import TcpListeners
from roost.proxy.tls import LocalAuthority, TlsError, server_context
from roost.store import Store

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


class Proxy:
    def __init__(self, store: Store, control: ControlPlane, config: ProxyConfig) -> None:
        self.config = config
        self.metrics = ProxyMetrics()
        self.catalog = Catalog(store)
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
        self.http = HttpProxy(
            self.catalog,
            self.router,
            self.metrics,
            config.domain,
            config.region,
            self.port,
            https_port=self.tls_port,
        )
        self.https = HttpProxy(
            self.catalog,
            self.router,
            self.metrics,
            config.domain,
            config.region,
            self.tls_port or 0,
            pool=self.http.pool,
            https=True,
        )
        self.tcp = TcpListeners(
            self.catalog,
            self.router,
            config.tcp_host,
            reserved=config.reserved_ports | {self.port, self.tls_port or self.port},
        )
        self.autostop = Autostopper(
            self.catalog, self.router, config.region, interval=config.autostop_interval
        )
        self._servers: list[asyncio.Server] = []
        self._autostop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.catalog.start()
        try:
            await self._listen(self.http, self.host, self.port, None, self.config.listen)
            if self.tls_port is not None:
                context = self._tls_context()
                assert self.config.tls_listen is not None
                await self._listen(
                    self.https, self.tls_host, self.tls_port, context, self.config.tls_listen
                )
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

    async def stop(self) -> None:
        if self._autostop_task is not None:
            self._autostop_task.cancel()
            await asyncio.gather(self._autostop_task, return_exceptions=True)
        await self.tcp.stop()
        for server in self._servers:
            server.close()
        self._servers.clear()
        self.http.pool.close()
        await self.catalog.stop()

    async def _listen(
        self, http: HttpProxy, host: str, port: int, tls: ssl.SSLContext | None, spec: str
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                http.protocol, host, port, reuse_address=True, backlog=1024, ssl=tls
            )
        except OSError as exc:
            raise ProxyError(
                f"the proxy cannot listen on {spec}: {exc.strerror}; pick another address"
            ) from None
        self._servers.append(server)

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
