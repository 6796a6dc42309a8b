"""The proxy as one component: catalog, router, HTTP listener, TCP listeners, autostop."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from roost.proxy.autostop import DEFAULT_INTERVAL, Autostopper
from roost.proxy.catalog import Catalog
from roost.proxy.control import ControlPlane
from roost.proxy.http import HttpProxy
from roost.proxy.metrics import ProxyMetrics
from roost.proxy.router import QUEUE_TIMEOUT, WAKE_TIMEOUT, Router
from roost.proxy.tcp import TcpListeners
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
        host, _, port = config.listen.rpartition(":")
        self.host, self.port = host.strip("[]") or "0.0.0.0", int(port)
        self.http = HttpProxy(
            self.catalog, self.router, self.metrics, config.domain, config.region, self.port
        )
        self.tcp = TcpListeners(
            self.catalog,
            self.router,
            config.tcp_host,
            reserved=config.reserved_ports | {self.port},
        )
        self.autostop = Autostopper(
            self.catalog, self.router, config.region, interval=config.autostop_interval
        )
        self._server: asyncio.Server | None = None
        self._autostop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.catalog.start()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                self.http.protocol, self.host, self.port, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            await self.catalog.stop()
            raise ProxyError(
                f"the proxy cannot listen on {self.config.listen}: {exc.strerror}; "
                "pick another address with --proxy-listen"
            ) from None
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
        if self._server is not None:
            self._server.close()
        self.http.pool.close()
        await self.catalog.stop()
