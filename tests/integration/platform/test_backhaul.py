"""Proxies of several hosts over one store: a machine on another host is reached through
that host's proxy (the backhaul), never at its private address.

Each "host" is a real Proxy on its own loopback address (127.0.0.1x); its "machines"
are plain servers on other loopback addresses (127.0.0.2x for host b, 127.0.0.3x for
host c), recorded in the store the way agents and the API record them. A host cut off
from the network is a black hole on 127.0.0.99, where connects hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.proxy.backhaul import BACKHAUL_CONNECT_TIMEOUT
from roost.proxy.server import Proxy, ProxyConfig
from roost.store import SqliteStore
from roost.store.records import (
    App,
    HostRecord,
    MachineRecord,
    MachineStatus,
    ProxyRecord,
    alive_key,
    app_key,
    host_key,
    machine_key,
    proxy_key,
    status_key,
)
from tests.unit.proxy.backend import Backend

HOSTS = {"a": ("127.0.0.10", "ams"), "b": ("127.0.0.11", "ams"), "c": ("127.0.0.12", "syd")}
BLACK_HOLE = "127.0.0.99"
MACHINE_NETS = {"a": "127.0.0.4", "b": "127.0.0.2", "c": "127.0.0.3"}
_ids = itertools.count(0x20000000000000)


@dataclass
class MachineServer(Backend):
    """A machine's app on its own private (loopback) address."""

    address: str = "127.0.0.2"
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a request arrives."""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.address, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _answer(
        self,
        target: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        self.arrived.set()
        return await super()._answer(target, headers, body, reader, writer)


@dataclass
class EchoServer:
    """A machine's raw TCP service: echoes what it gets, after a greeting."""

    address: str
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.address, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
        writer.close()


@dataclass
class FakeControl:
    fleet: Fleet
    starts: list[str] = field(default_factory=list)

    async def start(self, app: str, machine_id: str) -> None:
        self.starts.append(machine_id)
        await self.fleet.set_state(app, machine_id, "started")

    async def stop(self, app: str, machine_id: str, *, suspend: bool) -> None:
        await self.fleet.set_state(app, machine_id, "stopped")


@dataclass
class Fleet:
    store: SqliteStore
    proxies: dict[str, Proxy] = field(default_factory=dict)
    servers: list[MachineServer | EchoServer] = field(default_factory=list)
    control: FakeControl = field(init=False)
    _addresses: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.control = FakeControl(self)

    async def host(self, host: str) -> Proxy:
        ip, region = HOSTS[host]
        await self.store.put(host_key(host), HostRecord(id=host, region=region).to_json())
        await self.store.put(alive_key(host), "1")
        proxy = Proxy(
            self.store,
            self.control,
            ProxyConfig(
                listen=f"{ip}:0",
                domain="test",
                region=region,
                tcp_host=ip,
                autostop_interval=3600,
                wake_timeout=5,
                queue_timeout=0.5,
                host_id=host,
                backhaul_listen=f"{ip}:0",
            ),
        )
        self.proxies[host] = proxy
        await proxy.start()
        return proxy

    async def app_server(self, host: str) -> MachineServer:
        server = MachineServer(host, address=f"{MACHINE_NETS[host]}{next(self._addresses)}")
        await server.start()
        self.servers.append(server)
        return server

    async def echo_server(self, host: str) -> EchoServer:
        server = EchoServer(f"{MACHINE_NETS[host]}{next(self._addresses)}")
        await server.start()
        self.servers.append(server)
        return server

    async def machine(
        self,
        host: str,
        server: MachineServer | EchoServer,
        *,
        region: str | None = None,
        state: str = "started",
        hard: int | None = None,
        tcp_port: int | None = None,
    ) -> str:
        mid = f"{next(_ids):014x}"
        concurrency: dict[str, Any] = {"type": "requests", "soft_limit": 5}
        if hard:
            concurrency["hard_limit"] = hard
        handlers = [] if tcp_port else ["http"]
        service = {
            "internal_port": server.port,
            "ports": [{"port": tcp_port or 80, "handlers": handlers}],
            "concurrency": concurrency,
        }
        record = MachineRecord(
            id=mid,
            app="web",
            name=mid,
            region=region or HOSTS[host][1],
            host_id=host,
            config={"image": "x/y", "services": [service]},
            version="v1",
            desired="started",
            ipv4=server.address,
        )
        await self.store.put(machine_key("web", mid), record.to_json())
        status = MachineStatus(state=state, version="v1", host_id=host)
        await self.store.put(status_key("web", mid), status.to_json())
        await self.settle()
        return mid

    async def set_state(self, app: str, mid: str, state: str) -> None:
        kv = await self.store.get(status_key(app, mid))
        assert kv is not None
        status = MachineStatus.from_json(kv.value)
        status.state = state
        await self.store.put(status_key(app, mid), status.to_json())

    async def settle(self) -> None:
        """Until every proxy's catalog has seen every write made so far."""
        revision = (await self.store.range("/apps/")).revision
        for proxy in self.proxies.values():
            while proxy.catalog.applied < revision:
                await proxy.catalog.changed(proxy.catalog.version)

    def client(self, host: str) -> httpx.AsyncClient:
        proxy = self.proxies[host]
        return httpx.AsyncClient(
            base_url=f"http://{proxy.host}:{proxy.port}", headers={"Host": "web.test"}, timeout=10
        )


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    store = await SqliteStore.open(tmp_path / "s.db")
    world = Fleet(store)
    try:
        await store.put(app_key("web"), App(name="web", id="web").to_json())
        for host in HOSTS:
            await world.host(host)
        await world.settle()
        yield world
    finally:
        for proxy in world.proxies.values():
            await proxy.stop()
        for server in world.servers:
            if isinstance(server, MachineServer):
                server.release.set()
            await server.stop()
        await store.close()


async def raw(host: str, port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the peer closes."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """An address where connects hang, as to a host whose link is down: a listener that
    never accepts, its accept queue full, so the kernel drops every further SYN."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind((BLACK_HOLE, 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(2):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(address)
        yield address
    finally:
        for sock in (*fillers, listener):
            sock.close()


async def cut_off(fleet: Fleet, host: str, hole: tuple[str, int]) -> None:
    """``host``'s proxy unreachable while its liveness key and proxy record live on (its
    leases have not run out yet)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.open_connection(*hole), 0.2)
    await fleet.proxies.pop(host).stop()
    record = ProxyRecord(host, f"{hole[0]}:{hole[1]}", HOSTS[host][1])
    await fleet.store.put(proxy_key(host), record.to_json())
    await fleet.settle()


# -- HTTP -------------------------------------------------------------------------------


async def test_a_machine_on_another_host_is_served_through_its_proxy(fleet: Fleet) -> None:
    a, b = fleet.proxies["a"], fleet.proxies["b"]
    server = await fleet.app_server("b")
    mid = await fleet.machine("b", server)
    async with fleet.client("a") as c:
        r = await c.get("/", headers={"roost-deliver": "forged:1", "roost-cluster-secret": "x"})
        assert r.status_code == 200 and r.text.startswith("b 127.0.0.1")
        assert r.headers["fly-machine-id"] == mid and r.headers["fly-region"] == "ams"
        body = b"0123456789" * 50_000
        assert (await c.post("/echo", content=body)).content == body
    _, headers, _ = server.requests[0]
    assert not [name for name in headers if name.startswith("roost-")]
    assert headers["fly-region"] == "ams" and headers["x-forwarded-port"] == str(a.port)
    assert a.metrics.backhaul_out[("web", mid)] == 2
    assert b.metrics.backhaul_in[("web", mid)] == 2
    assert b.router.load.get(mid, 0) == 0, "the host's proxy released it"
    assert not a.metrics.backhaul_failures
    assert f'roost_proxy_backhaul_in_total{{app="web",machine="{mid}"}} 2' in b.metrics.render()


async def test_deliveries_need_the_cluster_secret(fleet: Fleet) -> None:
    b = fleet.proxies["b"]
    mid = await fleet.machine("b", await fleet.app_server("b"))
    assert b.backhaul is not None
    host, port = b.backhaul_host, b.backhaul_port
    for secret in (b"roost-cluster-secret: wrong\r\n", b""):
        got = await raw(
            host,
            port,
            b"GET / HTTP/1.1\r\nHost: web.test\r\nroost-deliver: %s:80\r\n%s"
            b"connection: close\r\n\r\n" % (mid.encode(), secret),
        )
        assert got.startswith(b"HTTP/1.1 401"), got
    got = await raw(host, port, b"ROOST-TCP wrong %s 80\r\n" % mid.encode())
    assert got == b"ROOST-ERR secret\r\n"
    assert b.metrics.backhaul_refused["secret"] == 3
    assert not b.metrics.backhaul_in


async def test_a_dead_host_is_not_routed_to(fleet: Fleet) -> None:
    mb = await fleet.machine("b", await fleet.app_server("b"))
    await fleet.store.delete(alive_key("b"))
    await fleet.settle()
    async with fleet.client("a") as c:
        r = await c.get("/")
        assert r.status_code == 503
        assert "no machine of app web is reachable" in r.text and "(b)" in r.text
        mc = await fleet.machine("c", await fleet.app_server("c"))
        r = await c.get("/")
        assert r.status_code == 200 and r.headers["fly-machine-id"] == mc
    assert not fleet.proxies["b"].metrics.backhaul_in
    assert not fleet.proxies["a"].metrics.backhaul_out.get(("web", mb))


async def test_a_dead_proxy_sends_the_request_to_another_machine(fleet: Fleet) -> None:
    a, b = fleet.proxies["a"], fleet.proxies["b"]
    mb = await fleet.machine("b", await fleet.app_server("b"))  # ams: nearest to a
    mc = await fleet.machine("c", await fleet.app_server("c"))  # syd
    async with fleet.client("a") as c:
        assert (await c.get("/")).headers["fly-machine-id"] == mb
        # b's proxy dies, and its record has not expired yet.
        assert b.backhaul is not None
        record = ProxyRecord("b", b.backhaul.address, "ams").to_json()
        await fleet.proxies.pop("b").stop()
        await fleet.store.put(proxy_key("b"), record)
        await fleet.settle()
        assert a.catalog.machine("web", mb).reachable  # type: ignore[union-attr]
        r = await c.post("/echo", content=b"sent twice")
        assert r.status_code == 200 and r.headers["fly-machine-id"] == mc
        assert r.content == b"sent twice"
    assert a.metrics.backhaul_failures[("web", mb)] == 1


async def test_a_host_cut_off_is_routed_around_after_one_connect_timeout(
    fleet: Fleet,
) -> None:
    a = fleet.proxies["a"]
    mb = await fleet.machine("b", await fleet.app_server("b"))  # ams: nearest to a
    mc = await fleet.machine("c", await fleet.app_server("c"))  # syd
    loop = asyncio.get_running_loop()
    with black_hole() as hole:
        await cut_off(fleet, "b", hole)
        assert a.catalog.machine("web", mb).reachable  # type: ignore[union-attr]
        async with fleet.client("a") as c:
            began = loop.time()
            r = await c.post("/echo", content=b"sent twice")
            first = loop.time() - began
            assert r.status_code == 200 and r.headers["fly-machine-id"] == mc
            assert r.content == b"sent twice"
            # It waited out the short connect timeout (not the host's lease), once.
            assert BACKHAUL_CONNECT_TIMEOUT / 2 < first < BACKHAUL_CONNECT_TIMEOUT + 3
            began = loop.time()
            for _ in range(10):
                r = await c.get("/")
                assert r.status_code == 200 and r.headers["fly-machine-id"] == mc
            assert loop.time() - began < BACKHAUL_CONNECT_TIMEOUT, "none waited on b"
    assert a.catalog.suspects.suspected("b")
    assert a.metrics.backhaul_failures[("web", mb)] == 1
    assert a.metrics.backhaul_suspects["b"] == 1
    assert 'roost_proxy_backhaul_suspect_total{host="b"} 1' in a.metrics.render()


async def test_a_suspect_host_serves_when_nothing_else_can(fleet: Fleet) -> None:
    a = fleet.proxies["a"]
    mb = await fleet.machine("b", await fleet.app_server("b"))
    a.catalog.suspects.mark("b")
    async with fleet.client("a") as c:
        r = await c.get("/")
    assert r.status_code == 200 and r.headers["fly-machine-id"] == mb
    assert not a.catalog.suspects.suspected("b"), "its proxy answered: trusted again"


async def test_the_machines_host_enforces_its_hard_limit(fleet: Fleet) -> None:
    b, c_proxy = fleet.proxies["b"], fleet.proxies["c"]
    busy = await fleet.app_server("b")
    mb = await fleet.machine("b", busy, hard=1)
    mc = await fleet.machine("c", await fleet.app_server("c"))
    async with fleet.client("b") as local, fleet.client("a") as remote:
        slow = asyncio.ensure_future(local.get("/slow"))
        await asyncio.wait_for(busy.arrived.wait(), 5)
        assert b.router.load[mb] == 1
        # a counts nothing on mb, so it picks it (nearest); b refuses, a goes on to mc.
        r = await remote.get("/")
        assert r.status_code == 200 and r.headers["fly-machine-id"] == mc
        busy.release.set()
        assert (await slow).status_code == 200
    assert b.metrics.backhaul_refused["hard-limit"] == 1
    assert c_proxy.metrics.backhaul_in[("web", mc)] == 1


async def test_replay_and_streams_go_through_the_backhaul(fleet: Fleet) -> None:
    server = await fleet.app_server("b")
    mb = await fleet.machine("b", server)
    mc = await fleet.machine("c", await fleet.app_server("c"))
    server.replay_to = f"instance={mc}"
    async with fleet.client("a") as c:
        # fly-replay is the edge's business: b passes it on, a sends the request to mc.
        r = await c.post("/replay", content=b"payload")
        assert r.status_code == 200 and r.headers["fly-machine-id"] == mc
        assert "fly-replay" not in r.headers

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"chunked ", b"request ", b"body"):
                yield part

        r = await c.post("/echo", content=chunks())
        assert r.headers["fly-machine-id"] == mb and r.content == b"chunked request body"
        async with c.stream("GET", "/chunked") as streamed:
            assert streamed.headers["transfer-encoding"] == "chunked"
            assert b"".join([part async for part in streamed.aiter_bytes()]) == b"one two three"
        big = await c.get("/big")
        assert len(big.content) == 5_000_000 and big.headers["fly-machine-id"] == mb


async def test_upgrades_become_a_tunnel_through_the_backhaul(fleet: Fleet) -> None:
    a = fleet.proxies["a"]
    mb = await fleet.machine("b", await fleet.app_server("b"))
    reader, writer = await asyncio.open_connection(a.host, a.port)
    try:
        writer.write(
            b"GET /upgrade HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\n"
            b"Upgrade: echo\r\n\r\nearly bytes "
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"fly-machine-id: %s" % mb.encode() in head
        assert head.count(b"fly-machine-id") == 1
        assert await asyncio.wait_for(reader.readexactly(12), 5) == b"early bytes "
        writer.write(b"\x00\x01 later")
        assert await asyncio.wait_for(reader.readexactly(8), 5) == b"\x00\x01 later"
    finally:
        writer.close()
    assert fleet.proxies["b"].metrics.backhaul_in[("web", mb)] == 1


async def test_nearest_region_first(fleet: Fleet) -> None:
    far = await fleet.machine("c", await fleet.app_server("c"), region="syd")
    near = await fleet.machine("b", await fleet.app_server("b"), region="fra")
    async with fleet.client("a") as c:
        served = {(await c.get("/")).headers["fly-machine-id"] for _ in range(5)}
    assert served == {near}
    # From c (syd) the same app is served by its own region's machine.
    async with fleet.client("c") as c:
        assert (await c.get("/")).headers["fly-machine-id"] == far


async def test_autostart_of_a_machine_on_another_host(fleet: Fleet) -> None:
    a, b = fleet.proxies["a"], fleet.proxies["b"]
    mb = await fleet.machine("b", await fleet.app_server("b"), state="stopped")
    async with fleet.client("a") as c:
        r = await c.get("/")
    assert r.status_code == 200 and r.headers["fly-machine-id"] == mb
    assert fleet.control.starts == [mb]
    # The request goes as soon as the machine is started; the wake-up ends (and records
    # its latency) once the port probe through b answers, maybe a moment later.
    wake = a.router._wakes.get("web")
    if wake is not None:
        await asyncio.wait_for(wake, 5)
    assert a.metrics.wake_latency["web"].count == 1
    assert b.metrics.backhaul_in[("web", mb)] == 1


# -- TCP --------------------------------------------------------------------------------


async def test_tcp_services_go_through_the_backhaul(fleet: Fleet) -> None:
    a, b = fleet.proxies["a"], fleet.proxies["b"]
    port = free_port(a.host)
    mb = await fleet.machine("b", await fleet.echo_server("b"), tcp_port=port)
    await a.tcp.sync()
    assert a.tcp.ports() == {port: "web"}
    reader, writer = await asyncio.open_connection(a.host, port)
    try:
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"hello\nping"
        writer.write(b" pong")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b" pong"
        assert b.router.load[mb] == 1 and a.router.load[mb] == 1
    finally:
        writer.close()
    assert a.metrics.backhaul_out[("web", mb)] == 1
    assert b.metrics.backhaul_in[("web", mb)] == 1


async def test_tcp_refused_by_the_host_goes_to_another_machine(fleet: Fleet) -> None:
    a, b = fleet.proxies["a"], fleet.proxies["b"]
    port = free_port(a.host)
    mb = await fleet.machine("b", await fleet.echo_server("b"), tcp_port=port)
    mc = await fleet.machine("c", await fleet.echo_server("c"), tcp_port=port)
    # b's autostop is draining mb (a cannot know): b refuses, a goes on to mc.
    b.router.draining.add(mb)
    await a.tcp.sync()
    reader, writer = await asyncio.open_connection(a.host, port)
    try:
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"hello\n"
    finally:
        writer.close()
    assert b.metrics.backhaul_refused["draining"] == 1
    assert a.metrics.backhaul_failures[("web", mb)] == 1
    assert fleet.proxies["c"].metrics.backhaul_in[("web", mc)] == 1


async def test_tcp_to_a_host_cut_off_goes_elsewhere_after_one_connect_timeout(
    fleet: Fleet,
) -> None:
    a = fleet.proxies["a"]
    port = free_port(a.host)
    await fleet.machine("b", await fleet.echo_server("b"), tcp_port=port)
    mc = await fleet.machine("c", await fleet.echo_server("c"), tcp_port=port)
    loop = asyncio.get_running_loop()
    took: list[float] = []
    with black_hole() as hole:
        await cut_off(fleet, "b", hole)
        await a.tcp.sync()
        for _ in range(6):
            began = loop.time()
            reader, writer = await asyncio.open_connection(a.host, port)
            try:
                assert await asyncio.wait_for(reader.readexactly(6), 5) == b"hello\n"
            finally:
                writer.close()
            took.append(loop.time() - began)
    assert BACKHAUL_CONNECT_TIMEOUT / 2 < took[0] < BACKHAUL_CONNECT_TIMEOUT + 3
    assert sum(took[1:]) < BACKHAUL_CONNECT_TIMEOUT, "none waited on b"
    assert fleet.proxies["c"].metrics.backhaul_in[("web", mc)] == 6
    assert a.metrics.backhaul_suspects["b"] == 1
