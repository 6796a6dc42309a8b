"""TCP services: a listener per service port, each connection piped byte for byte to a
machine picked (and woken) like an HTTP request.

Listeners open and close as the catalog changes: a port is served while some machine
of an app declares it in a service whose handlers do not include ``http`` (those go
through the HTTP listener, by ``Host``).

A connection for a machine on another host goes to that host's proxy, which splices
it to the machine after a one-line preamble (see ``backhaul``); when nothing could be
delivered (refused, unreachable) the connection tries another machine, up to
``DELIVERY_ATTEMPTS``; a host whose proxy could not be reached becomes suspect, as for
HTTP (see ``suspects``). The same class serves the receiving end: ``delivery`` takes
the connections other hosts' proxies send here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.proxy.backhaul import (
    BACKHAUL_CONNECT_TIMEOUT,
    DELIVERY_TIMEOUT,
    MAX_LINE,
    TCP_ERR,
    TCP_OK,
    Backhaul,
    admit,
    parse_preamble,
)
from roost.proxy.catalog import Catalog, Machine, Service
from roost.proxy.router import DELIVERY_ATTEMPTS, Lease, NoCapacity, Router
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
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

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
        if not self.closed.done():
            self.closed.set_result(None)

    # A slow reader on one side holds the other side back instead of buffering.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class Delivery(PipeEnd):
    """The sending end of a backhaul TCP delivery: the other host's proxy answers the
    preamble with one line first (``answer``: empty when it took the connection, else
    why not); what follows is the machine's."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        super().__init__(on_close)
        self.answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._line = b""

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            super().data_received(data)
            return
        self._line += data
        end = self._line.find(b"\r\n")
        if end < 0:
            if len(self._line) > MAX_LINE:
                self.answer.set_result("unreadable answer")
            return
        line, rest = self._line[:end], self._line[end + 2 :]
        if line == TCP_OK:
            self.answer.set_result("")
        else:
            self.answer.set_result(line.removeprefix(TCP_ERR).decode("latin-1") or "refused")
        if rest:
            super().data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_result("connection closed")
        super().connection_lost(exc)


@dataclass
class TcpListeners:
    catalog: Catalog
    router: Router
    host: str = "0.0.0.0"
    reserved: frozenset[int] = frozenset()
    """Ports the proxy itself uses (the HTTP listener, the API)."""
    backhaul: Backhaul | None = None
    """Set in a fleet: reaches machines on other hosts and takes deliveries for ours."""
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
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

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

        failed: frozenset[str] = frozenset()
        while len(failed) < DELIVERY_ATTEMPTS:
            try:
                lease = await self.router.acquire(app, service_of, exclude=failed)
            except NoCapacity as exc:
                log.info("tcp %s:%s refused: %s", app, port, exc)
                break
            if await self._pipe(client, lease):
                return
            failed |= {lease.machine.id}
        if client.transport is not None:
            client.transport.close()

    async def _pipe(self, client: PipeEnd, lease: Lease) -> bool:
        """Splice the client to the leased machine; False if nothing reached it."""
        machine, service = lease.machine, lease.service
        metrics = self.router.metrics
        try:
            if machine.local:
                _, upstream = await connect(
                    lambda: PipeEnd(lease.release), machine.address, service.internal_port, True
                )
            else:
                metrics.backhaul_out[(machine.app, machine.id)] += 1
                upstream = await self._through_backhaul(lease)
        except ConnectFailed as exc:
            lease.release()
            metrics.errors[(machine.app, machine.id)] += 1
            if not machine.local:
                metrics.backhaul_failures[(machine.app, machine.id)] += 1
            log.warning("tcp: machine %s unreachable: %s", machine.id, exc)
            return False
        if client.transport is None or client.transport.is_closing():
            upstream.transport.close()  # type: ignore[union-attr]
            return True
        upstream.link(client)
        client.link(upstream)
        await _spliced(client, upstream)
        return True

    async def _through_backhaul(self, lease: Lease) -> PipeEnd:
        machine, port = lease.machine, lease.service.internal_port
        backhaul = self.backhaul
        assert backhaul is not None and machine.backhaul is not None
        try:
            _, upstream = await connect(
                lambda: Delivery(lease.release), *machine.backhaul, timeout=BACKHAUL_CONNECT_TIMEOUT
            )
        except ConnectFailed as exc:
            backhaul.unreachable(machine, exc)
            raise
        # The handshake is the host's answer: its link is up, whatever its proxy says next.
        backhaul.reached(machine)
        assert upstream.transport is not None
        upstream.transport.write(backhaul.preamble(machine, port))
        try:
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                refused = await upstream.answer
        except TimeoutError:
            refused = "no answer in time"
        if refused:
            upstream.transport.close()
            raise ConnectFailed(f"host {machine.host_id} cannot deliver: {refused}")
        return upstream

    # -- the receiving end ------------------------------------------------------------------

    def delivery(self, preamble: bytes) -> PipeEnd:
        """The protocol for a connection another host's proxy delivers here (its first
        line is ``preamble``)."""
        client = PipeEnd()
        task = asyncio.ensure_future(self._deliver(client, preamble))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        return client

    async def _deliver(self, client: PipeEnd, preamble: bytes) -> None:
        assert self.backhaul is not None and client.transport is not None
        metrics = self.router.metrics
        parsed = parse_preamble(preamble)
        if parsed is None or not self.backhaul.admits(parsed[0]):
            metrics.backhaul_refused["secret"] += 1
            _refuse(client, "secret")
            return
        _, mid, port = parsed
        held = admit(self.router, self.catalog.machine_by_id(mid), port)
        if isinstance(held, str):
            metrics.backhaul_refused[held] += 1
            _refuse(client, held)
            return
        machine = held.machine
        metrics.backhaul_in[(machine.app, machine.id)] += 1
        try:
            _, upstream = await connect(lambda: PipeEnd(held.release), machine.address, port, True)
        except ConnectFailed as exc:
            held.release()
            metrics.errors[(machine.app, machine.id)] += 1
            log.warning("tcp: machine %s unreachable: %s", machine.id, exc)
            _refuse(client, "unreachable")
            return
        if client.transport.is_closing():
            upstream.transport.close()  # type: ignore[union-attr]
            return
        client.transport.write(TCP_OK + b"\r\n")
        upstream.link(client)
        client.link(upstream)
        await _spliced(client, upstream)


async def _spliced(client: PipeEnd, upstream: PipeEnd) -> None:
    """Until both ends close; the connection's task lives as long, so that stopping the
    listeners (which cancels it) closes the connection."""
    try:
        await asyncio.wait([client.closed, upstream.closed])
    finally:
        for end in (client, upstream):
            if end.transport is not None:
                end.transport.close()


def _refuse(client: PipeEnd, reason: str) -> None:
    assert client.transport is not None
    client.transport.write(TCP_ERR + reason.encode() + b"\r\n")
    client.transport.close()
