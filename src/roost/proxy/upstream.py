"""Connections from the proxy to machines (or to their hosts' proxies, see ``backhaul``):
HTTP/1.1 with keep-alive pooling.

One ``Upstream`` carries one request at a time. Its response head is awaited; its body
is pushed to a sink (the client's transport) as it arrives, so bodies stream with
constant memory. Idle connections are kept per (address, port) for reuse; a machine
closing one (busybox httpd closes after every response) just drops it from the pool.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import httptools

IDLE_TIMEOUT = 4.0
MAX_IDLE_PER_TARGET = 64
CONNECT_TIMEOUT = 5.0
CONNECT_RETRY_WINDOW = 3.0
CONNECT_RETRY_FIRST = 0.02
CONNECT_RETRY_MAX = 0.25
KEEPALIVE_IDLE = 2
KEEPALIVE_INTERVAL = 1
KEEPALIVE_PROBES = 2
UNACKED_TIMEOUT_MS = 4000

P = TypeVar("P", bound=asyncio.Protocol)


class UpstreamError(Exception):
    """The machine's connection failed or sent something unparseable."""


class ConnectFailed(UpstreamError):
    """Nothing was sent: the machine did not accept the connection."""


@dataclass
class ResponseHead:
    status: int
    reason: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    upgrade: bool

    def header(self, name: bytes) -> bytes | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


class Upstream(asyncio.Protocol):
    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()
        self.tunnel: asyncio.Transport | None = None
        self.on_pause: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None

    def _reset(self) -> None:
        self._head: asyncio.Future[ResponseHead] = asyncio.get_running_loop().create_future()
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._response: ResponseHead | None = None
        self._early: list[bytes] = []
        self.sink: Callable[[bytes], None] | None = None
        self.received_any = False

    # -- driving one exchange ---------------------------------------------------------------

    def begin(self) -> None:
        """Prepare for the next request on this connection."""
        self._reset()
        self._parser = httptools.HttpResponseParser(self)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise UpstreamError("connection to the machine is closed")
        self.transport.write(data)

    async def head(self) -> ResponseHead:
        return await self._head

    def stream_to(self, sink: Callable[[bytes], None]) -> None:
        """Deliver the body to ``sink`` from now on (what arrived early goes first)."""
        self.sink = sink
        for chunk in self._early:
            sink(chunk)
        self._early.clear()

    async def finished(self) -> None:
        await self._done

    @property
    def complete(self) -> bool:
        """The whole response has arrived (and not by a failure)."""
        return self._done.done() and self._done.exception() is None

    def take_early(self) -> bytes:
        """The body bytes that arrived before anyone streamed them."""
        body = b"".join(self._early)
        self._early.clear()
        return body

    # -- protocol callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # A 101: what follows the head belongs to the upgraded protocol.
            leftover = data[exc.args[0] :]
            if leftover:
                self._early.append(leftover)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"invalid HTTP response from the machine: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel is not None:
            self.tunnel.close()
            return
        # A response without a length ends when the connection does.
        if self._response is not None and not self._done.done() and self._close_delimited():
            self._done.set_result(None)
            return
        self._fail(UpstreamError(f"the machine closed the connection{f': {exc}' if exc else ''}"))

    def pause_writing(self) -> None:
        if self.on_pause:
            self.on_pause()

    def resume_writing(self) -> None:
        if self.on_resume:
            self.on_resume()

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        head = ResponseHead(
            status=parser.get_status_code(),
            reason=self._reason,
            version=parser.get_http_version(),
            headers=self._headers,
            keep_alive=parser.should_keep_alive(),
            upgrade=parser.should_upgrade(),
        )
        self._response = head
        if not self._head.done():
            self._head.set_result(head)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink(body)
        else:
            self._early.append(bytes(body))

    def on_message_complete(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    # -- helpers ------------------------------------------------------------------------

    def _close_delimited(self) -> bool:
        head = self._response
        assert head is not None
        return head.header(b"content-length") is None and not _chunked(head.headers)

    def _fail(self, exc: Exception) -> None:
        for future in (self._head, self._done):
            if not future.done():
                future.set_exception(exc)
                # Retrieved by whoever awaits it; silence "never retrieved" otherwise.
                future.exception()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)


@dataclass
class Pool:
    """Idle keep-alive connections per machine address and port."""

    idle: defaultdict[tuple[str, int], list[Upstream]] = field(
        default_factory=lambda: defaultdict(list)
    )

    async def get(
        self, address: str, port: int, *, patient: bool = True, timeout: float = CONNECT_TIMEOUT
    ) -> tuple[Upstream, bool]:
        """A connection, and whether it was reused (a reused one may turn out stale)."""
        key = (address, port)
        idle = self.idle[key]
        now = time.monotonic()
        while idle:
            upstream = idle.pop()
            if not upstream.closed and now - upstream.idle_since < IDLE_TIMEOUT:
                upstream.begin()
                return upstream, True
            upstream.close()
        return await self.connect(address, port, patient=patient, timeout=timeout), False

    async def connect(
        self, address: str, port: int, *, patient: bool = False, timeout: float = CONNECT_TIMEOUT
    ) -> Upstream:
        _, upstream = await connect(
            lambda: Upstream((address, port)), address, port, patient, timeout=timeout
        )
        return upstream

    def put(self, upstream: Upstream) -> None:
        idle = self.idle[upstream.key]
        if upstream.closed or len(idle) >= MAX_IDLE_PER_TARGET:
            upstream.close()
            return
        upstream.idle_since = time.monotonic()
        upstream.sink = None
        upstream.on_pause = upstream.on_resume = None
        idle.append(upstream)

    def close(self) -> None:
        for idle in self.idle.values():
            for upstream in idle:
                upstream.close()
        self.idle.clear()


async def connect(
    factory: Callable[[], P],
    address: str,
    port: int,
    patient: bool = False,
    *,
    timeout: float = CONNECT_TIMEOUT,
) -> tuple[asyncio.BaseTransport, P]:
    """Connect to a machine; ``patient`` retries refusals for a few seconds, because a
    machine that has just started may not listen yet. ``timeout`` bounds each attempt."""
    loop = asyncio.get_running_loop()
    delay = CONNECT_RETRY_FIRST
    deadline = loop.time() + (CONNECT_RETRY_WINDOW if patient else 0.0)
    while True:
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(factory, address, port), timeout
            )
        except ConnectionRefusedError as exc:
            if loop.time() + delay > deadline:
                raise ConnectFailed(f"cannot connect to {address}:{port}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX)
            continue
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(
                f"cannot connect to {address}:{port}: {exc or 'timed out'}"
            ) from exc
        detect_dead_peer(transport)
        return transport, protocol


def detect_dead_peer(transport: asyncio.BaseTransport) -> None:
    """Let the kernel end a connection whose peer went silent (a host cut off mid-request)
    within seconds, instead of waiting on it forever. A live peer's kernel answers the
    probes however long its application takes, so slow responses are not cut."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKED_TIMEOUT_MS)
