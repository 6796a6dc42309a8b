"""TCP services: a listener per service port, each connection piped byte for byte to a
machine picked (and woken) like an HTTP request.

Listeners open and close as the catalog changes: a port is served while some machine
of an app declares it in a service whose handlers do not include ``http`` (those go
through the HTTP listener, by ``Host``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.proxy.catalog import Catalog, Machine, Service
from roost.proxy.router import Lease, NoCapacity, Router
from roost.proxy.upstream import ConnectFailed, connect

log = logging.getLogger("roost.proxy")


class PipeEnd(asyncio.Protocol):
    """One side of a byte pipe; writes what it reads to its peer, with flow control."""

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: PipeEnd | None = None
        self._on_close = on_close
        self._pending: list[bytes] = []
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def link(self, peer: PipeEnd) -> None:
        self.peer = peer
        for chunk in self._pending:
            self._send(chunk)
        self._pending.clear()
        if self._eof:
            self.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._pending.append(data)
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        if self.peer is None:
            # Half-closed before the machine was connected: pass it on once it is.
            self._eof = True
            return True
        if self.peer.transport is not None:
            if self.peer.transport.can_write_eof():
                self.peer.transport.write_eof()
                return True
            self.peer.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    # A slow reader on one side holds the other side back instead of buffering.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


@dataclass
class TcpListeners:
    catalog: Catalog
    router: Router
    host: str = "0.0.0.0"
    reserved: frozenset[int] = frozenset()
    """Ports the proxy itself uses (the HTTP listener, the API)."""
    _servers: dict[int, tuple[str, asyncio.Server]] = field(default_factory=dict)
    _refused: set[int] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    def ports(self) -> dict[int, str]:
        return {port: app for port, (app, _) in self._servers.items()}

    async def start(self) -> None:
        await self.sync()
        self._task = asyncio.create_task(self._follow(), name="proxy-tcp")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for _, server in self._servers.values():
            server.close()
        self._servers.clear()
        for task in self._connections:
            task.cancel()

    async def _follow(self) -> None:
        version = self.catalog.version
        while True:
            version = await self.catalog.changed(version)
            await self.sync()

    async def sync(self) -> None:
        wanted: dict[int, str] = {}
        for app in list(self.catalog.apps()):
            for machine in self.catalog.machines(app):
                for service in machine.services:
                    for port in service.ports:
                        if not port.http and port.port not in self.reserved:
                            wanted.setdefault(port.port, app)
        for port in [p for p in self._servers if wanted.get(p) != self._servers[p][0]]:
            self._servers.pop(port)[1].close()
        for port, app in wanted.items():
            if port in self._servers or port in self._refused:
                continue
            try:
                server = await asyncio.get_running_loop().create_server(
                    lambda app=app, port=port: self._accept(app, port), self.host, port
                )
            except OSError as exc:
                self._refused.add(port)
                log.warning("tcp service of app %s: cannot listen on port %s: %s", app, port, exc)
                continue
            self._servers[port] = (app, server)
            log.info("tcp service of app %s listening on %s:%s", app, self.host, port)

    def _accept(self, app: str, port: int) -> PipeEnd:
        client = PipeEnd()
        task = asyncio.ensure_future(self._connect(client, app, port))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        return client

    async def _connect(self, client: PipeEnd, app: str, port: int) -> None:
        def service_of(machine: Machine) -> Service | None:
            return machine.service_for_port(port)

        try:
            lease = await self.router.acquire(app, service_of)
        except NoCapacity as exc:
            log.info("tcp %s:%s refused: %s", app, port, exc)
            if client.transport is not None:
                client.transport.close()
            return
        await self._pipe(client, lease)

    async def _pipe(self, client: PipeEnd, lease: Lease) -> None:
        machine, service = lease.machine, lease.service
        try:
            _, upstream = await connect(
                lambda: PipeEnd(lease.release), machine.address, service.internal_port, True
            )
        except ConnectFailed as exc:
            lease.release()
            self.router.metrics.errors[(machine.app, machine.id)] += 1
            log.warning("tcp: machine %s unreachable: %s", machine.id, exc)
            if client.transport is not None:
                client.transport.close()
            return
        if client.transport is None or client.transport.is_closing():
            upstream.transport.close()  # type: ignore[union-attr]
            return
        upstream.link(client)
        client.link(upstream)
