"""How the proxies of a fleet hand traffic to each other: the backhaul.

A machine's private address is reachable only on its own host, so a proxy that picks a
machine on another host delivers the request to that host's proxy, which counts it
against the machine's limits and dials the machine as it would for its own traffic.
Each host's proxy takes deliveries on one address (``ProxyConfig.backhaul_listen``) and
registers it as ``/proxies/{host}`` on a store lease: a proxy that dies stops being
delivered to when its lease runs out.

Every delivery carries the fleet's secret (``/cluster/secret``). On the wire:

* **HTTP**: the request as it would go to the machine, plus ``roost-deliver: <machine
  id>:<internal port>`` and ``roost-cluster-secret: <secret>``. The answer is the
  machine's response (``fly-replay`` included: replays are the sending proxy's
  business), ``401`` for a wrong secret, or ``503`` with ``roost-backhaul-error:
  <reason>`` when this host cannot deliver; the sender then tries another machine.
* **Probe**: ``GET /.roost/probe/<machine id>/<port>`` (with the secret) answers 200
  when the machine's port accepts connections and 503 when not, so a proxy waking a
  machine on another host knows when to send it traffic.
* **TCP**: the line ``ROOST-TCP <secret> <machine id> <internal port>\\r\\n``, answered
  ``ROOST-OK\\r\\n`` before the bytes are spliced both ways, or ``ROOST-ERR
  <reason>\\r\\n`` and a close. The sender waits for the answer before it passes on the
  client's bytes (one round trip per connection) so it can try another machine.

HTTP and TCP share the port: no HTTP method starts like the TCP preamble, so the first
bytes of a connection tell them apart (:class:`Sniffer`). Reasons are ``unknown-machine``,
``not-here``, ``host-down``, ``not-started``, ``no-service``, ``draining``,
``hard-limit``, ``unreachable`` (the machine did not accept the connection) and, for
TCP (HTTP says 401), ``secret``.

A host cut off from the network shows first as connects to its proxy that hang: those
time out after ``BACKHAUL_CONNECT_TIMEOUT``, the request or connection tries another
machine, and the host is suspect for a while (see ``suspects``), so the next ones go
elsewhere from the start instead of each waiting out a timeout until the host's
liveness lease runs out. Any answer from the host's proxy clears the suspicion.

The secret travels in clear: the backhaul belongs on a private network (WireGuard, a
trusted LAN), as Fly's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, MutableSet
from dataclasses import dataclass, field

from roost import cluster
from roost.proxy.catalog import Machine
from roost.proxy.metrics import ProxyMetrics
from roost.proxy.router import Lease, Router
from roost.proxy.suspects import Suspects
from roost.proxy.upstream import ConnectFailed, Pool, UpstreamError
from roost.store import LeaseNotFound, Store, StoreError
from roost.store.records import ProxyRecord, proxy_key

log = logging.getLogger("roost.proxy")

RECORD_TTL = 5.0
KEEPALIVE_INTERVAL = 1.5
PROBE_TIMEOUT = 2.0
DELIVERY_TIMEOUT = 10.0
"""How long a TCP delivery may take to be answered (the machine is dialled patiently)."""
BACKHAUL_CONNECT_TIMEOUT = 1.0
"""Hosts share a LAN, where a handshake takes a millisecond: a connect to a host's proxy
still pending after a second means the host is cut off, and the request had better try
another machine now. (Connects to a machine of this host keep ``CONNECT_TIMEOUT``.)"""

DELIVER_HEADER = b"roost-deliver"
ERROR_HEADER = b"roost-backhaul-error"
SECRET_HEADER = cluster.HEADER.encode()
PROBE_PATH = b"/.roost/probe/"
TCP_PREAMBLE = b"ROOST-TCP "
TCP_OK = b"ROOST-OK"
TCP_ERR = b"ROOST-ERR "
MAX_LINE = 512


@dataclass
class Backhaul:
    """This host's end of the backhaul: the fleet secret, its ``/proxies/`` record, the
    probe that reaches machines on other hosts, and which of those hosts it could not
    reach lately."""

    store: Store
    host_id: str
    region: str
    pool: Pool
    suspects: Suspects = field(default_factory=Suspects)
    """The catalog's, in a proxy: the balancer reads it."""
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    ttl: float = RECORD_TTL
    keepalive_interval: float = KEEPALIVE_INTERVAL
    secret: bytes = b""
    address: str = ""
    """Where other proxies deliver to this one (``host:port``), once registered."""
    _lease: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def load_secret(self) -> None:
        self.secret = (await cluster.cluster_secret(self.store)).encode()

    def admits(self, offered: bytes | None) -> bool:
        # As cluster.matches, but on bytes: nothing to decode on every delivery.
        return (
            bool(self.secret) and offered is not None and hmac.compare_digest(self.secret, offered)
        )

    # -- the /proxies/ record ---------------------------------------------------------

    async def register(self, address: str) -> None:
        self.address = address
        await self._register()
        self._task = asyncio.create_task(self._keep(), name="proxy-backhaul-record")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._lease:
            # Other proxies stop delivering here now rather than when the lease runs out.
            with contextlib.suppress(StoreError):
                await self.store.revoke_lease(self._lease)
            self._lease = 0

    async def _register(self) -> None:
        lease = await self.store.grant_lease(self.ttl)
        record = ProxyRecord(self.host_id, self.address, self.region)
        await self.store.put(proxy_key(self.host_id), record.to_json(), lease=lease)
        self._lease = lease

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            try:
                if self._lease:
                    try:
                        await self.store.keepalive(self._lease)
                        continue
                    except LeaseNotFound:
                        log.warning(
                            "proxy record of host %s expired; registering it again", self.host_id
                        )
                        self._lease = 0
                await self._register()
            except StoreError as exc:
                # Deliveries keep flowing meanwhile: the others keep their last view.
                log.warning("proxy record of host %s not renewed: %s", self.host_id, exc)

    # -- reaching machines on other hosts ---------------------------------------------

    def deliver_headers(self, machine: Machine, port: int) -> list[tuple[bytes, bytes]]:
        return [
            (DELIVER_HEADER, b"%s:%d" % (machine.id.encode(), port)),
            (SECRET_HEADER, self.secret),
        ]

    def preamble(self, machine: Machine, port: int) -> bytes:
        return TCP_PREAMBLE + b"%s %s %d\r\n" % (self.secret, machine.id.encode(), port)

    async def probe(self, machine: Machine, port: int) -> bool:
        """Whether ``port`` of a machine on another host accepts connections."""
        if machine.backhaul is None:
            return False
        upstream = None
        try:
            upstream, _ = await self.pool.get(
                *machine.backhaul, patient=False, timeout=BACKHAUL_CONNECT_TIMEOUT
            )
            upstream.write(
                b"GET %s%s/%d HTTP/1.1\r\nhost: roost\r\n%s: %s\r\ncontent-length: 0\r\n\r\n"
                % (PROBE_PATH, machine.id.encode(), port, SECRET_HEADER, self.secret)
            )
            async with asyncio.timeout(PROBE_TIMEOUT):
                head = await upstream.head()
                await upstream.finished()
        except ConnectFailed as exc:
            self.unreachable(machine, exc)
            return False
        except (UpstreamError, TimeoutError):
            if upstream is not None:
                upstream.close()
            return False
        self.reached(machine)
        if head.keep_alive:
            self.pool.put(upstream)
        else:
            upstream.close()
        return head.status == 200

    # -- passive health of the other hosts ----------------------------------------------

    def unreachable(self, machine: Machine, why: Exception) -> None:
        """A connect to the proxy of ``machine``'s host failed: route around that host."""
        host = machine.host_id
        if self.suspects.mark(host):
            self.metrics.backhaul_suspects[host] += 1
            log.warning(
                "host %s is suspect for %.0fs: its proxy is unreachable: %s",
                host,
                self.suspects.period,
                why,
            )

    def reached(self, machine: Machine) -> None:
        """The proxy of ``machine``'s host answered: trust that host again."""
        if self.suspects.clear(machine.host_id):
            log.info("host %s is no longer suspect: its proxy answers", machine.host_id)


# -- the receiving end --------------------------------------------------------------------


def admit(router: Router, machine: Machine | None, port: int) -> Lease | str:
    """Hold a machine of this host for a delivery, or say why it cannot take one."""
    if machine is None:
        return "unknown-machine"
    if not machine.local:
        return "not-here"
    if not machine.reachable:
        return "host-down"
    if not machine.started:
        return "not-started"
    service = next((s for s in machine.services if s.internal_port == port), None)
    if service is None:
        return "no-service"
    if machine.id in router.draining:
        return "draining"
    if service.hard_limit is not None and router.load.get(machine.id, 0) >= service.hard_limit:
        return "hard-limit"
    return router.hold(machine, service)


def parse_target(value: bytes | None) -> tuple[str, int] | None:
    """``<machine id>:<port>`` (the ``roost-deliver`` header)."""
    if not value:
        return None
    mid, _, port = value.decode("latin-1").partition(":")
    return (mid, int(port)) if mid and port.isdigit() else None


def parse_preamble(line: bytes) -> tuple[bytes, str, int] | None:
    """(secret, machine id, port) of a TCP delivery's first line (without ``\\r\\n``)."""
    parts = line.removeprefix(TCP_PREAMBLE).split(b" ")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1].decode("latin-1"), int(parts[2])


class Sniffer(asyncio.Protocol):
    """Reads a backhaul connection's first bytes, then hands it to the HTTP listener or,
    after a TCP preamble, to a TCP delivery (given the preamble line).

    Every connection joins ``connections`` (weakly held), so a proxy that stops can
    close them: other proxies must not keep delivering on pooled connections to it.
    """

    def __init__(
        self,
        http: Callable[[], asyncio.Protocol],
        tcp: Callable[[bytes], asyncio.Protocol],
        connections: MutableSet[asyncio.BaseTransport],
    ) -> None:
        self._http = http
        self._tcp = tcp
        self._connections = connections
        self._buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._connections.add(transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buffer = self._buffer = self._buffer + data
        if buffer.startswith(TCP_PREAMBLE):
            end = buffer.find(b"\r\n")
            if end >= 0:
                self._hand_over(self._tcp(buffer[:end]), buffer[end + 2 :])
            elif len(buffer) > MAX_LINE:
                self.transport.close()
        elif not TCP_PREAMBLE.startswith(buffer):
            self._hand_over(self._http(), buffer)

    def _hand_over(self, protocol: asyncio.Protocol, data: bytes) -> None:
        assert self.transport is not None
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if data:
            protocol.data_received(data)
