"""The HTTP listener: find the app by ``Host``, pick a machine, forward, stream back.

Plain asyncio protocols with httptools' parser, no web framework: this is the data
path. Per client connection, requests are served one at a time in arrival order
(HTTP/1.1 pipelining); a request's body is forwarded as it arrives and also kept (up
to ``REPLAY_LIMIT``) so a ``fly-replay`` answer can send it elsewhere, or so it can go
to another machine when it could not be delivered (nothing reached the machine: it
refused the connection, or its host's proxy refused the delivery or could not be
reached, which makes that host suspect: see ``suspects``), up to ``DELIVERY_ATTEMPTS``
machines. Upgrades (websockets) become a raw byte tunnel once the machine answers 101.

One listener class, two roles. The edge (``worker=False``) takes clients' requests,
finds the app by ``Host`` and picks a machine; one on another host gets the request
through that host's proxy (see ``backhaul``), the same bytes plus delivery headers.
The worker (``worker=True``, the backhaul listener) takes those deliveries for
machines of its own host and forwards them untouched but for the delivery headers:
the edge stamps ``fly-*`` headers and handles ``fly-replay``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

from roost.proxy.backhaul import (
    BACKHAUL_CONNECT_TIMEOUT,
    DELIVER_HEADER,
    ERROR_HEADER,
    PROBE_PATH,
    SECRET_HEADER,
    Backhaul,
    admit,
    parse_target,
)
from roost.proxy.catalog import Catalog, Machine, Service
from roost.proxy.metrics import ProxyMetrics
from roost.proxy.replay import Replay, parse_replay
from roost.proxy.router import DELIVERY_ATTEMPTS, Lease, NoCapacity, Router
from roost.proxy.upstream import (
    CONNECT_TIMEOUT,
    ConnectFailed,
    Pool,
    ResponseHead,
    Upstream,
    UpstreamError,
)

log = logging.getLogger("roost.proxy")

REPLAY_LIMIT = 1024 * 1024
REPLAY_HOPS = 3
READ_HIGH_WATER = 256 * 1024
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


@dataclass
class Body:
    """A request body as it arrives from the client, readable more than once.

    Chunks are kept until REPLAY_LIMIT bytes have arrived, so the body can be sent again
    (to another machine after ``fly-replay``, or over a fresh connection when a pooled
    one turns out closed); past that, sent chunks are dropped and it cannot.
    """

    chunks: list[bytes] = field(default_factory=list)
    pos: int = 0
    received: int = 0
    done: bool = False
    replayable: bool = True
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def buffered(self) -> int:
        """Bytes received and not handed out yet (for flow control)."""
        return sum(len(c) for c in self.chunks[self.pos :])

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.received += len(chunk)
        if self.received > REPLAY_LIMIT:
            self.replayable = False
        self._arrived.set()

    def finish(self) -> None:
        self.done = True
        self._arrived.set()

    def rewind(self) -> bool:
        """Start over from the first byte; False if that is no longer possible."""
        if not self.replayable:
            return False
        self.pos = 0
        return True

    async def next(self) -> bytes | None:
        """The next chunk, or None at the end."""
        while self.pos >= len(self.chunks):
            if self.done:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        chunk = self.chunks[self.pos]
        self.pos += 1
        if not self.replayable:
            del self.chunks[: self.pos]
            self.pos = 0
        return chunk


@dataclass
class Request:
    method: bytes = b""
    url: bytes = b""
    version: str = "1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    keep_alive: bool = True
    upgrade: bool = False
    upgrade_leftover: bytes = b""
    body: Body = field(default_factory=Body)
    by_name: dict[bytes, bytes] = field(default_factory=dict)
    """Lower-cased header name → value (the first one), filled once the head is in."""
    chunked: bool = False
    has_body: bool = False

    def header(self, name: bytes) -> bytes | None:
        return self.by_name.get(name)

    def head_complete(self) -> None:
        for name, value in self.headers:
            self.by_name.setdefault(name.lower(), value)
        encoding = self.by_name.get(b"transfer-encoding")
        self.chunked = encoding is not None and b"chunked" in encoding.lower()
        self.has_body = self.chunked or self.by_name.get(b"content-length", b"0") != b"0"


@dataclass
class HttpProxy:
    catalog: Catalog
    router: Router
    metrics: ProxyMetrics
    domain: str
    region: str
    port: int
    pool: Pool = field(default_factory=Pool)
    https: bool = False
    """Whether this listener terminates TLS (``X-Forwarded-Proto: https``)."""
    https_port: int | None = None
    """Where ``force_https`` redirects plain requests; None: no HTTPS listener."""
    backhaul: Backhaul | None = None
    """Set in a fleet: how to reach machines on other hosts (and, for a worker, the
    secret deliveries must show)."""
    worker: bool = False
    """This listener takes deliveries from other hosts' proxies (see the module doc)."""

    def protocol(self) -> ClientConnection:
        return ClientConnection(self)

    def app_for_host(self, host: bytes | None) -> str | None:
        if not host:
            return None
        name = host.decode("latin-1").rsplit(":", 1)[0] if b"]" not in host else ""
        suffix = f".{self.domain}"
        if name.endswith(suffix):
            return name[: -len(suffix)] or None
        return None


class ClientConnection(asyncio.Protocol):
    def __init__(self, proxy: HttpProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._parser = httptools.HttpRequestParser(self)
        self._current: Request | None = None
        self._queue: deque[Request] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._tunnel: asyncio.Transport | None = None
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._upstream_paused: Upstream | None = None
        self._active_upstream: Upstream | None = None

    # -- transport callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.write(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._current is not None:
                self._current.upgrade_leftover = bytes(data[exc.args[0] :])
            # Everything after an upgrade head belongs to the tunnel, once there is one.
            self._pause_reading()
        except httptools.HttpParserError as exc:
            self._error_and_close(400, f"invalid HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._tunnel is not None:
            self._tunnel.close()
        for request in self._queue:
            request.body.finish()
        if self._worker is not None:
            self._worker.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()
        if self._upstream_paused is None and self._active_upstream is not None:
            upstream = self._active_upstream
            if upstream.transport is not None:
                upstream.transport.pause_reading()
                self._upstream_paused = upstream

    def resume_writing(self) -> None:
        self._writable.set()
        upstream, self._upstream_paused = self._upstream_paused, None
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.resume_reading()

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = Request()

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.headers.append((bytes(name), bytes(value)))

    def on_headers_complete(self) -> None:
        request = self._current
        assert request is not None
        parser = self._parser
        request.method = parser.get_method()
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.upgrade = parser.should_upgrade()
        request.head_complete()
        if not request.has_body:
            request.body.finish()
        self._queue.append(request)
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._serve_queue())

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body.feed(bytes(body))
        if self._current.body.buffered > READ_HIGH_WATER:
            self._pause_reading()

    def on_message_complete(self) -> None:
        if self._current is not None:
            self._current.body.finish()

    # -- serving --------------------------------------------------------------------------

    async def _serve_queue(self) -> None:
        try:
            while self._queue and not self._closed:
                request = self._queue[0]
                keep = await self._serve(request)
                self._queue.popleft()
                if not keep or not request.keep_alive:
                    self._close()
                    return
                self._resume_reading()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("proxy: request handling failed")
            self._close()
        finally:
            self._worker = None

    async def _serve(self, request: Request) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        proxy = self.proxy
        if proxy.worker:
            return await self._deliver(request)
        request_id = _request_id()
        app = proxy.app_for_host(request.header(b"host"))
        if app is None:
            return await self._local(request)
        if not proxy.catalog.has_app(app):
            return await self._simple(request, 404, f"no app named {app} on this proxy\n")
        if not proxy.https and proxy.https_port is not None and _forces_https(proxy, app):
            return await self._redirect_to_https(request)
        target = Target()
        replay_src = b""
        hops = 0
        failed: frozenset[str] = frozenset()
        undelivered: Undelivered | None = None
        while True:
            service_of = _http_service(target)
            try:
                exclude = target.exclude | failed if failed else target.exclude
                lease = await proxy.router.acquire(app, service_of, exclude=exclude)
            except NoCapacity as exc:
                if undelivered is not None:
                    # No other machine to try: the failure says more than "none left".
                    return await self._simple(request, undelivered.status, undelivered.text)
                return await self._simple(request, 503, f"{exc}\n", retry_after=True)
            try:
                outcome = await self._forward(request, lease, request_id, replay_src)
            finally:
                lease.release()
            if isinstance(outcome, Replay):
                hops += 1
                if hops > REPLAY_HOPS:
                    return await self._simple(request, 508, "fly-replay hop limit reached\n")
                if not request.body.rewind():
                    return await self._simple(
                        request, 502, "fly-replay: body too large to replay\n"
                    )
                replay_src = _replay_source(outcome, lease.machine)
                target = Target.from_replay(outcome, lease.machine)
                continue
            if isinstance(outcome, Undelivered):
                undelivered = outcome
                failed |= {lease.machine.id}
                if len(failed) >= DELIVERY_ATTEMPTS or not request.body.rewind():
                    return await self._simple(request, outcome.status, outcome.text)
                continue
            return outcome

    async def _forward(
        self, request: Request, lease: Lease, request_id: str, replay_src: bytes
    ) -> bool | Replay | Undelivered:
        machine = lease.machine
        backhaul = None if machine.local else self.proxy.backhaul
        head = self._request_head(request, lease, request_id, replay_src)
        if not machine.local:
            self.proxy.metrics.backhaul_out[(machine.app, machine.id)] += 1
        try:
            upstream, response = await self._exchange(request, machine, lease.service, head)
        except ConnectFailed as exc:
            if backhaul is not None:
                backhaul.unreachable(machine, exc)
            return self._undelivered(machine, 502, str(exc))
        except UpstreamError as exc:
            self.proxy.metrics.errors[(machine.app, machine.id)] += 1
            log.warning("proxy: machine %s failed: %s", machine.id, exc)
            return await self._simple(request, 502, f"machine {machine.id}: {exc}\n")
        if backhaul is not None:
            backhaul.reached(machine)
        if not machine.local and response.status == 503:
            refused = response.header(ERROR_HEADER)
            if refused is not None:
                self._discard(upstream)
                why = f"host {machine.host_id} cannot deliver: {refused.decode('latin-1')}"
                return self._undelivered(machine, 503, why)
        replay = response.header(b"fly-replay")
        if replay is not None and request.body.done and request.body.replayable:
            upstream.close()
            return parse_replay(replay.decode("latin-1"))
        if request.upgrade and response.status == 101:
            return self._tunnel_to(upstream, request, response, machine, request_id)
        return await self._respond(request, upstream, response, machine, request_id)

    def _undelivered(self, machine: Machine, status: int, why: str) -> Undelivered:
        metrics = self.proxy.metrics
        metrics.errors[(machine.app, machine.id)] += 1
        if not machine.local:
            metrics.backhaul_failures[(machine.app, machine.id)] += 1
        log.warning("proxy: nothing delivered to machine %s: %s", machine.id, why)
        return Undelivered(status, f"machine {machine.id}: {why}\n")

    def _discard(self, upstream: Upstream) -> None:
        """Done with a short answer: keep the connection if the answer is all in."""
        if upstream.complete and not upstream.closed:
            self.proxy.pool.put(upstream)
        else:
            upstream.close()

    # -- the worker role: deliveries from other hosts' proxies ------------------------------

    async def _deliver(self, request: Request) -> bool:
        proxy = self.proxy
        assert proxy.backhaul is not None
        if not proxy.backhaul.admits(request.header(SECRET_HEADER)):
            proxy.metrics.backhaul_refused["secret"] += 1
            return await self._simple(request, 401, "wrong or missing cluster secret\n")
        if request.method == b"GET" and request.url.startswith(PROBE_PATH):
            return await self._probe(request)
        target = parse_target(request.header(DELIVER_HEADER))
        if target is None:
            return await self._simple(request, 400, "missing or invalid roost-deliver header\n")
        mid, port = target
        held = admit(proxy.router, proxy.catalog.machine_by_id(mid), port)
        if isinstance(held, str):
            proxy.metrics.backhaul_refused[held] += 1
            return await self._refuse(request, held, f"machine {mid}: {held}\n")
        machine = held.machine
        proxy.metrics.backhaul_in[(machine.app, machine.id)] += 1
        try:
            return await self._forward_here(request, held)
        finally:
            held.release()

    async def _forward_here(self, request: Request, lease: Lease) -> bool:
        machine = lease.machine
        try:
            upstream, response = await self._exchange(
                request, machine, lease.service, _worker_head(request)
            )
        except ConnectFailed as exc:
            self.proxy.metrics.errors[(machine.app, machine.id)] += 1
            log.warning("proxy: machine %s unreachable: %s", machine.id, exc)
            return await self._refuse(request, "unreachable", f"machine {machine.id}: {exc}\n")
        except UpstreamError as exc:
            self.proxy.metrics.errors[(machine.app, machine.id)] += 1
            log.warning("proxy: machine %s failed: %s", machine.id, exc)
            return await self._simple(request, 502, f"machine {machine.id}: {exc}\n")
        if request.upgrade and response.status == 101:
            return self._tunnel_to(upstream, request, response, machine, "")
        return await self._respond(request, upstream, response, machine, "")

    async def _probe(self, request: Request) -> bool:
        mid, _, port = request.url[len(PROBE_PATH) :].decode("latin-1").partition("/")
        machine = self.proxy.catalog.machine_by_id(mid)
        # Ready only once this host sees it started too, or deliveries would be refused.
        if machine is None or not machine.local or not machine.started or not port.isdigit():
            return await self._simple(request, 503, f"machine {mid} is not started here\n")
        if await self.proxy.router.probe(machine.address, int(port)):
            return await self._simple(request, 200, "accepting\n")
        return await self._simple(request, 503, "not accepting connections\n")

    async def _refuse(self, request: Request, reason: str, text: str) -> bool:
        return await self._simple(
            request, 503, text, headers=b"%s: %s\r\n" % (ERROR_HEADER, reason.encode())
        )

    async def _exchange(
        self, request: Request, machine: Machine, service: Service, head: bytes
    ) -> tuple[Upstream, ResponseHead]:
        """Send the request and read the response head, on a pooled connection if any."""
        pool = self.proxy.pool
        if machine.local:
            address, port = machine.address, service.internal_port
            patient, timeout = True, CONNECT_TIMEOUT
        else:
            # A host's proxy is up or not: no waiting for it as for a booting machine.
            assert machine.backhaul is not None
            (address, port), patient, timeout = machine.backhaul, False, BACKHAUL_CONNECT_TIMEOUT
        for attempt in (0, 1):
            upstream: Upstream | None = None
            reused = False
            try:
                if request.upgrade:
                    upstream = await pool.connect(address, port, patient=patient, timeout=timeout)
                else:
                    upstream, reused = await pool.get(
                        address, port, patient=patient, timeout=timeout
                    )
                await self._send_request(upstream, request, head)
                return upstream, await upstream.head()
            except UpstreamError:
                if upstream is not None:
                    upstream.close()
                # A pooled connection the machine had just closed: a fresh one will do,
                # as long as the body can be sent again.
                stale = reused and upstream is not None and not upstream.received_any
                if attempt == 0 and stale and request.body.rewind():
                    continue
                raise
        raise AssertionError("unreachable")

    async def _send_request(self, upstream: Upstream, request: Request, head: bytes) -> None:
        upstream.write(head)
        chunked = request.chunked
        while (chunk := await request.body.next()) is not None:
            upstream.write(_frame(chunk, chunked))
            self._resume_reading()
        if chunked:
            upstream.write(b"0\r\n\r\n")

    async def _respond(
        self,
        request: Request,
        upstream: Upstream,
        response: ResponseHead,
        machine: Machine,
        request_id: str,
    ) -> bool:
        assert self.transport is not None
        framing = frame_response(
            request, response, machine, request_id, stamp=not self.proxy.worker
        )
        bodiless, chunked_out, client_keeps = (
            framing.bodiless,
            framing.chunked_out,
            framing.client_keeps,
        )
        head = framing.head
        transport = self.transport
        if bodiless:
            transport.write(head)
        elif upstream.complete:
            # The whole response is in already (the common small case): one write.
            body = upstream.take_early()
            if chunked_out:
                body = (_frame(body, True) if body else b"") + b"0\r\n\r\n"
            transport.write(head + body)
        else:
            transport.write(head)
            if chunked_out:
                upstream.stream_to(lambda data: transport.write(_frame(data, True)))
            else:
                upstream.stream_to(transport.write)
            self._active_upstream = upstream
            upstream.on_pause, upstream.on_resume = self._pause_reading, self._resume_reading
            try:
                await upstream.finished()
            except UpstreamError as exc:
                self.proxy.metrics.errors[(machine.app, machine.id)] += 1
                log.warning("proxy: machine %s broke off a response: %s", machine.id, exc)
                upstream.close()
                return False
            finally:
                self._active_upstream = None
            if chunked_out:
                transport.write(b"0\r\n\r\n")
        # A response may end before the request body did (an early 4xx): drain the rest.
        while await request.body.next() is not None:
            self._resume_reading()
        if framing.reusable and not upstream.closed:
            self.proxy.pool.put(upstream)
        else:
            upstream.close()
        if response.status >= 500:
            self.proxy.metrics.errors[(machine.app, machine.id)] += 1
        return client_keeps

    def _tunnel_to(
        self,
        upstream: Upstream,
        request: Request,
        response: ResponseHead,
        machine: Machine,
        request_id: str,
    ) -> bool:
        assert self.transport is not None and upstream.transport is not None
        headers = response.headers
        if not self.proxy.worker:
            headers = [(k, v) for k, v in headers if k.lower() != b"fly-replay"]
            headers += [
                (b"fly-request-id", request_id.encode()),
                (b"fly-machine-id", machine.id.encode()),
            ]
        self.transport.write(
            b"HTTP/1.1 101 %s\r\n" % (response.reason or b"Switching Protocols")
            + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            + b"\r\n"
        )
        upstream.stream_to(self.transport.write)
        upstream.tunnel = self.transport
        self._tunnel = upstream.transport
        if request.upgrade_leftover:
            upstream.transport.write(request.upgrade_leftover)
        self._resume_reading()
        # The tunnel lives until either side closes; the queue is done with this client.
        self._queue.clear()
        self._queue.append(request)
        return True

    # -- local answers ------------------------------------------------------------------

    async def _local(self, request: Request) -> bool:
        path = request.url.split(b"?", 1)[0]
        if request.method == b"GET" and path == b"/metrics":
            return await self._simple(
                request, 200, self.proxy.metrics.render(), content_type=b"text/plain; version=0.0.4"
            )
        host = (request.header(b"host") or b"").decode("latin-1")
        return await self._simple(
            request,
            404,
            f"no app for host {host!r}: address apps as <app>.{self.proxy.domain}\n",
        )

    async def _redirect_to_https(self, request: Request) -> bool:
        host = (request.header(b"host") or b"").decode("latin-1").rsplit(":", 1)[0]
        port = self.proxy.https_port
        location = f"https://{host}{'' if port == 443 else f':{port}'}{request.url.decode()}"
        while await request.body.next() is not None:
            self._resume_reading()
        keep = request.keep_alive
        if self.transport is not None and not self._closed:
            self.transport.write(
                b"HTTP/1.1 301 Moved Permanently\r\nlocation: %s\r\ncontent-length: 0\r\n"
                b"via: 1.1 roost\r\nconnection: %s\r\n\r\n"
                % (location.encode(), b"keep-alive" if keep else b"close")
            )
        return keep

    async def _simple(
        self,
        request: Request,
        status: int,
        text: str,
        *,
        content_type: bytes = b"text/plain; charset=utf-8",
        retry_after: bool = False,
        headers: bytes = b"",
    ) -> bool:
        while await request.body.next() is not None:
            self._resume_reading()
        body = text.encode()
        reason = _REASONS.get(status, b"Error")
        extra = (b"retry-after: 1\r\n" if retry_after else b"") + headers
        keep = request.keep_alive and not request.upgrade
        if self.transport is not None and not self._closed:
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s"
                b"via: 1.1 roost\r\nconnection: %s\r\n\r\n"
                % (
                    status,
                    reason,
                    content_type,
                    len(body),
                    extra,
                    b"keep-alive" if keep else b"close",
                )
                + body
            )
        return keep

    def _request_head(
        self, request: Request, lease: Lease, request_id: str, replay_src: bytes
    ) -> bytes:
        proxy = self.proxy
        forwarded_for = request.header(b"x-forwarded-for")
        client = self.peer.encode()
        # Clients cannot speak for the proxy: its own headers are set here only.
        headers = [
            (k, v)
            for k, v in request.headers
            if (name := k.lower()) not in HOP_BY_HOP
            and name not in (b"x-forwarded-for", b"fly-replay-src", b"fly-request-id")
            and not name.startswith(b"roost-")
        ]
        port = str(proxy.port).encode()
        headers += [
            (b"x-forwarded-for", forwarded_for + b", " + client if forwarded_for else client),
            (b"x-forwarded-proto", b"https" if proxy.https else b"http"),
            (b"x-forwarded-ssl", b"on" if proxy.https else b"off"),
            (b"x-forwarded-port", port),
            (b"fly-forwarded-port", port),
            (b"fly-client-ip", client),
            (b"fly-region", proxy.region.encode()),
            (b"fly-request-id", request_id.encode()),
            (b"via", b"1.1 roost"),
        ]
        if replay_src:
            headers.append((b"fly-replay-src", replay_src))
        machine = lease.machine
        if not machine.local:
            assert proxy.backhaul is not None
            headers += proxy.backhaul.deliver_headers(machine, lease.service.internal_port)
        return _head(request, headers)

    # -- flow control and teardown ---------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closed:
            if self._current is not None and self._current.body.buffered > READ_HIGH_WATER:
                return
            self._reading_paused = False
            self.transport.resume_reading()

    def _close(self) -> None:
        if self.transport is not None and self._tunnel is None:
            self.transport.close()

    def _error_and_close(self, status: int, text: str) -> None:
        if self.transport is not None:
            body = text.encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                % (status, _REASONS.get(status, b"Error"), len(body))
                + body
            )
            self.transport.close()


def _worker_head(request: Request) -> bytes:
    """A delivered request as its machine gets it: the edge set every header but ours."""
    headers = [
        (k, v)
        for k, v in request.headers
        if (name := k.lower()) not in HOP_BY_HOP and not name.startswith(b"roost-")
    ]
    return _head(request, headers)


def _head(request: Request, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request line and ``headers``, with the framing and upgrade headers added."""
    if request.chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    if request.upgrade:
        headers.append((b"connection", b"upgrade"))
        headers.append((b"upgrade", request.header(b"upgrade") or b""))
    else:
        headers.append((b"connection", b"keep-alive"))
    line = request.method + b" " + request.url + b" HTTP/1.1\r\n"
    return line + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"


@dataclass(frozen=True, slots=True)
class Undelivered:
    """Nothing reached the machine: the request may go to another one."""

    status: int
    text: str


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    508: b"Loop Detected",
}


@dataclass(frozen=True, slots=True)
class Framing:
    """How a machine's response goes on to the client."""

    head: bytes
    bodiless: bool
    chunked_out: bool
    """Sent chunked: the machine's was chunked, or had no length (re-framed)."""
    client_keeps: bool
    """The client connection stays open after it."""
    reusable: bool
    """The machine connection can serve another request after it."""


def frame_response(
    request: Request,
    response: ResponseHead,
    machine: Machine,
    request_id: str,
    *,
    stamp: bool = True,
) -> Framing:
    """``stamp``: add the proxy's ``fly-*`` headers and drop ``fly-replay`` (the edge's
    job; a worker passes the machine's response on as it is)."""
    bodiless = (
        request.method == b"HEAD" or response.status in (204, 304) or (100 <= response.status < 200)
    )
    length = response.header(b"content-length")
    encoding = response.header(b"transfer-encoding")
    upstream_chunked = encoding is not None and b"chunked" in encoding.lower()
    # Close-delimited bodies are re-framed as chunked so the client connection lives on.
    rechunk = not bodiless and length is None and request.version == "1.1"
    chunked_out = not bodiless and (upstream_chunked or rechunk)
    client_keeps = request.keep_alive and (length is not None or chunked_out or bodiless)
    lines = [b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason or b"OK")]
    for name, value in response.headers:
        lowered = name.lower()
        if lowered not in HOP_BY_HOP and (lowered != b"fly-replay" or not stamp):
            lines.append(name + b": " + value + b"\r\n")
    if stamp:
        lines.append(
            b"fly-request-id: %s\r\nfly-machine-id: %s\r\nfly-region: %s\r\nvia: 1.1 roost\r\n"
            % (request_id.encode(), machine.id.encode(), machine.region.encode())
        )
    if chunked_out:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(
        b"connection: keep-alive\r\n\r\n" if client_keeps else b"connection: close\r\n\r\n"
    )
    return Framing(
        head=b"".join(lines),
        bodiless=bodiless,
        chunked_out=chunked_out,
        client_keeps=client_keeps,
        reusable=response.keep_alive and (length is not None or upstream_chunked or bodiless),
    )


def _forces_https(proxy: HttpProxy, app: str) -> bool:
    """Whether the app's HTTP service asks plain requests to move to HTTPS."""
    for machine in proxy.catalog.machines(app):
        service = machine.http_service()
        if service is not None:
            return any(p.force_https for p in service.ports if p.http)
    return False


_REQUEST_PREFIX = os.urandom(6).hex()
_request_counter = itertools.count()


def _request_id() -> str:
    """Unique per proxy process and cheap: a random prefix and a counter (no syscall)."""
    return f"{_REQUEST_PREFIX}{next(_request_counter):012x}"


def _frame(chunk: bytes, chunked: bool) -> bytes:
    if not chunked:
        return chunk
    return b"%x\r\n%s\r\n" % (len(chunk), chunk)


@dataclass(frozen=True, slots=True)
class Target:
    """Which machines a (re)dispatch may use, narrowed by ``fly-replay``."""

    instance: str | None = None
    regions: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    @classmethod
    def from_replay(cls, replay: Replay, origin: Machine) -> Target:
        return cls(
            instance=replay.instance,
            regions=frozenset(replay.regions),
            exclude=frozenset({origin.id}) if replay.elsewhere else frozenset(),
        )


def _http_service(target: Target) -> Callable[[Machine], Service | None]:
    def service_of(machine: Machine) -> Service | None:
        if target.instance is not None and machine.id != target.instance:
            return None
        if target.regions and machine.region not in target.regions:
            return None
        return machine.http_service()

    return service_of


def _replay_source(replay: Replay, origin: Machine) -> bytes:
    parts = [f"instance={origin.id}", f"region={origin.region}"]
    if replay.state:
        parts.append(f"state={replay.state}")
    return ";".join(parts).encode()
