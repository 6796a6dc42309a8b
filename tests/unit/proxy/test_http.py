"""The HTTP data path against loopback backends: framing, keep-alive, replay, upgrades."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from roost.proxy.http import HttpProxy
from tests.unit.proxy.backend import Backend
from tests.unit.proxy.conftest import World, service


@pytest.fixture
async def proxy(world: World) -> AsyncIterator[tuple[HttpProxy, int]]:
    http = HttpProxy(world.catalog, world.router, world.metrics, "test", "here", 0)
    server = await asyncio.get_running_loop().create_server(http.protocol, "127.0.0.1", 0)
    yield http, server.sockets[0].getsockname()[1]
    server.close()
    http.pool.close()


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    started = [Backend("a"), Backend("b")]
    for backend in started:
        await backend.start()
    yield started
    for backend in started:
        backend.release.set()
        await backend.stop()


async def raw(port: int, data: bytes, until: bytes, count: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    while got.count(until) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        got += chunk
    writer.close()
    return got


def client(port: int, app: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Host": f"{app}.test"}, timeout=10
    )


async def test_forwarding_headers_and_bodies(
    world: World, proxy: tuple[HttpProxy, int], backends: list[Backend]
) -> None:
    _, port = proxy
    app = await world.app("web")
    mid = await world.machine(app, service(backends[0].port))
    async with client(port, app) as c:
        r = await c.get("/")
        assert r.status_code == 200 and r.text == "a 127.0.0.1"
        assert r.headers["fly-machine-id"] == mid and r.headers["via"] == "1.1 roost"
        _, headers, _ = backends[0].requests[-1]
        assert headers["fly-region"] == "here" and headers["x-forwarded-proto"] == "http"
        assert headers["host"] == "web.test" and len(headers["fly-request-id"]) == 24

        body = b"0123456789" * 50_000
        assert (await c.post("/echo", content=body)).content == body

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"chunked ", b"request ", b"body"):
                yield part

        assert (await c.post("/echo", content=chunks())).content == b"chunked request body"
        assert (await c.get("/chunked")).text == "one two three"
        r = await c.get("/close")
        assert r.text == "until the end" and r.headers["transfer-encoding"] == "chunked"
        assert (await c.head("/")).content == b""
        big = await c.get("/big")
        assert len(big.content) == 5_000_000
    async with client(port, "ghost") as c:
        r = await c.get("/")
        assert r.status_code == 404 and "no app named ghost" in r.text


async def test_keep_alive_reuses_upstream_connections(
    world: World, proxy: tuple[HttpProxy, int], backends: list[Backend]
) -> None:
    http, port = proxy
    app = await world.app("web")
    await world.machine(app, service(backends[0].port))
    async with client(port, app) as c:
        for _ in range(10):
            assert (await c.get("/")).status_code == 200
    assert len(http.pool.idle[("127.0.0.1", backends[0].port)]) == 1


async def test_pipelined_requests_answer_in_order(
    world: World, proxy: tuple[HttpProxy, int], backends: list[Backend]
) -> None:
    _, port = proxy
    app = await world.app("web")
    await world.machine(app, service(backends[0].port))
    one = b"POST /echo HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\n\r\nfirst"
    two = b"GET /chunked HTTP/1.1\r\nHost: web.test\r\n\r\n"
    three = b"POST /echo HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\n\r\nthird"
    got = await raw(port, one + two + three, b"third", 1)
    assert got.count(b"HTTP/1.1 200") == 3
    assert got.index(b"first") < got.index(b"three") < got.index(b"third")


async def test_metrics_and_unknown_hosts(world: World, proxy: tuple[HttpProxy, int]) -> None:
    _, port = proxy
    got = await raw(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", b"# TYPE", 2)
    assert b"200 OK" in got and b"roost_proxy_requests_total" in got
    got = await raw(port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"\n", 5)
    assert b"404" in got and b"<app>.test" in got
    got = await raw(port, b"NOT HTTP AT ALL\r\n\r\n", b"400", 1)
    assert b"400 Bad Request" in got


async def test_fly_replay_sends_the_request_elsewhere(
    world: World, proxy: tuple[HttpProxy, int], backends: list[Backend]
) -> None:
    _, port = proxy
    app = await world.app("web")
    a = await world.machine(app, service(backends[0].port))
    b = await world.machine(app, service(backends[1].port))
    backends[0].replay_to = f"instance={b};state=x1"
    world.router.load[b] = 5  # makes a the first pick: it has fewer requests in flight
    async with client(port, app) as c:
        r = await c.post("/replay", content=b"payload")
    assert r.status_code == 200 and r.headers["fly-machine-id"] == b
    assert r.text == f"b 127.0.0.1 instance={a};region=here;state=x1"
    assert [req[2] for req in backends[1].requests] == [b"payload"]
    # Replaying forever ends at the hop limit.
    backends[1].replay_to = f"instance={a}"
    backends[0].replay_to = f"instance={b}"
    async with client(port, app) as c:
        assert (await c.post("/replay", content=b"again")).status_code == 508


async def test_upgrade_becomes_a_tunnel(
    world: World, proxy: tuple[HttpProxy, int], backends: list[Backend]
) -> None:
    _, port = proxy
    app = await world.app("web")
    await world.machine(app, service(backends[0].port))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /upgrade HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        b"early bytes "
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    assert await asyncio.wait_for(reader.readexactly(12), 5) == b"early bytes "
    writer.write(b"\x00\x01 later")
    assert await asyncio.wait_for(reader.readexactly(8), 5) == b"\x00\x01 later"
    writer.close()


async def test_503_when_everything_is_at_its_hard_limit(
    world: World, proxy: tuple[HttpProxy, int], backends: list[Backend]
) -> None:
    _, port = proxy
    app = await world.app("web")
    await world.machine(app, service(backends[0].port, soft=1, hard=1))
    async with client(port, app) as c:
        slow = asyncio.ensure_future(c.get("/slow"))
        await asyncio.sleep(0.1)
        r = await c.get("/")
        assert r.status_code == 503 and "hard concurrency limit" in r.text
        assert r.headers["retry-after"] == "1"
        backends[0].release.set()
        assert (await slow).text == "slow a"


async def test_a_client_leaving_mid_body_releases_its_machine(
    world: World, proxy: tuple[HttpProxy, int], backends: list[Backend]
) -> None:
    _, port = proxy
    app = await world.app("web")
    mid = await world.machine(app, service(backends[0].port, soft=1, hard=1))
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: web.test\r\nContent-Length: 100000\r\n\r\nsome")
    await writer.drain()
    await asyncio.sleep(0.1)
    assert world.router.load.get(mid) == 1
    writer.close()
    await asyncio.wait_for(_released(world, mid), 5)
    async with client(port, app) as c:
        assert (await c.get("/")).status_code == 200


async def test_machine_errors_are_502(world: World, proxy: tuple[HttpProxy, int]) -> None:
    _, port = proxy
    app = await world.app("web")
    # Nothing listens on this port: a refused connection is retried briefly, then 502.
    await world.machine(app, service(1))
    async with client(port, app) as c:
        r = await c.get("/")
    assert r.status_code == 502 and "cannot connect" in r.text


async def _released(world: World, mid: str) -> None:
    while world.router.load.get(mid):
        await world.router.wait_for_release()
