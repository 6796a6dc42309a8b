"""The proxy in front of real machines: routing, limits, autostart, replay, upgrades, TCP."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.platform import RoostServer, new_server
from tests.integration.platform.helpers import (
    create,
    events,
    get,
    new_app,
    run,
    until,
)

pytestmark = pytest.mark.root

# A busybox machine: httpd with CGI scripts on 8080, a TCP echo on 7000 and a raw
# "Upgrade: echo" server on 9000.
KIT = r"""
mkdir -p /www/cgi-bin
echo "hello from $FLY_MACHINE_ID" > /www/index.html
cat > /www/cgi-bin/slow <<'EOF'
#!/bin/sh
sleep ${QUERY_STRING:-1}
printf 'Content-Type: text/plain\r\n\r\n'
echo "slow from $FLY_MACHINE_ID"
EOF
cat > /www/cgi-bin/replay <<'EOF'
#!/bin/sh
if [ "$QUERY_STRING" != "$FLY_MACHINE_ID" ]; then
  printf "fly-replay: instance=$QUERY_STRING\r\nContent-Type: text/plain\r\n\r\nnot me\n"
  exit 0
fi
printf 'Content-Type: text/plain\r\n\r\n'
echo "served by $FLY_MACHINE_ID after $HTTP_FLY_REPLAY_SRC"
head -c "$CONTENT_LENGTH"
EOF
cat > /www/cgi-bin/away <<'EOF'
#!/bin/sh
printf "fly-replay: elsewhere=true\r\nContent-Type: text/plain\r\n\r\nnot me\n"
EOF
cat > /www/cgi-bin/echo <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
head -c "$CONTENT_LENGTH"
EOF
cat > /upgrade <<'EOF'
#!/bin/sh
while read -r line; do
  [ -z "$(printf '%s' "$line" | tr -d '\r')" ] && break
done
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n'
exec cat
EOF
chmod +x /www/cgi-bin/* /upgrade
nc -ll -p 7000 -e /bin/cat &
nc -ll -p 9000 -e /upgrade &
exec httpd -f -p 8080 -h /www
"""


def kit(
    demo_images: dict[str, str],
    *,
    internal_port: int = 8080,
    soft: int | None = None,
    hard: int | None = None,
    autostop: str | bool = False,
    minimum: int = 0,
    tcp_port: int | None = None,
) -> dict[str, Any]:
    concurrency: dict[str, Any] = {"type": "requests"}
    if soft:
        concurrency["soft_limit"] = soft
    if hard:
        concurrency["hard_limit"] = hard
    services: list[dict[str, Any]] = [
        {
            "protocol": "tcp",
            "internal_port": internal_port,
            "ports": [{"port": 80, "handlers": ["http"]}],
            "concurrency": concurrency,
            "autostart": True,
            "autostop": autostop,
            "min_machines_running": minimum,
        }
    ]
    if tcp_port:
        services.append({"protocol": "tcp", "internal_port": 7000, "ports": [{"port": tcp_port}]})
    return {
        "image": demo_images["roost/busybox"],
        "init": {"exec": ["/bin/sh", "-c", KIT]},
        "services": services,
    }


def proxy_get(roost: RoostServer, app: str, path: str = "/", **kw: Any) -> httpx.Response:
    return httpx.get(
        f"{roost.proxy_url}{path}", headers={"Host": f"{app}.localhost"}, timeout=30, **kw
    )


async def concurrent_gets(roost: RoostServer, app: str, path: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        base_url=roost.proxy_url,
        headers={"Host": f"{app}.localhost"},
        timeout=60,
        limits=httpx.Limits(max_connections=n),
    ) as client:
        return await asyncio.gather(*(client.get(path) for _ in range(n)))


@pytest.fixture(scope="module")
def c(roost: RoostServer) -> httpx.Client:
    return roost.client()


def test_routes_by_host_and_says_which_machine(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "route")
    machine = run(c, app, kit(demo_images))
    r = proxy_get(roost, app)
    assert r.status_code == 200 and r.text == f"hello from {machine['id']}\n"
    assert r.headers["fly-machine-id"] == machine["id"]
    assert r.headers["via"] == "1.1 roost" and len(r.headers["fly-request-id"]) == 24

    posted = httpx.post(
        f"{roost.proxy_url}/cgi-bin/echo",
        headers={"Host": f"{app}.localhost"},
        content=b"x" * 100_000,
        timeout=30,
    )
    assert posted.status_code == 200 and posted.content == b"x" * 100_000

    assert proxy_get(roost, "nope").status_code == 404
    metrics = httpx.get(f"{roost.proxy_url}/metrics", timeout=5).text
    assert f'roost_proxy_requests_total{{app="{app}",machine="{machine["id"]}"}}' in metrics


def test_keep_alive_and_pipelining(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "pipe")
    machine = run(c, app, kit(demo_images))
    with socket.create_connection(("127.0.0.1", roost.proxy_port), timeout=10) as s:
        request = f"GET / HTTP/1.1\r\nHost: {app}.localhost\r\n\r\n".encode()
        s.sendall(request * 3)
        data = b""
        while data.count(b"hello from") < 3:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise AssertionError(f"stuck after {data!r}") from None
            assert chunk, f"connection closed early after {data!r}"
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.count(machine["id"].encode()) >= 3


def test_soft_and_hard_limits(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "limits")
    machines = [run(c, app, kit(demo_images, soft=1, hard=2)) for _ in range(2)]
    # Below soft limits first: two concurrent requests land on different machines.
    responses = asyncio.run(concurrent_gets(roost, app, "/cgi-bin/slow?1", 2))
    served = Counter(r.headers["fly-machine-id"] for r in responses)
    assert sorted(served.values()) == [1, 1] and set(served) == {m["id"] for m in machines}

    # Four fit under the hard limits (2 each); a fifth queues until one finishes.
    responses = asyncio.run(concurrent_gets(roost, app, "/cgi-bin/slow?2", 5))
    assert all(r.status_code == 200 for r in responses)
    elapsed = sorted(r.elapsed.total_seconds() for r in responses)
    assert elapsed[-1] >= elapsed[0] + 1.5, "the fifth request waited for capacity"


def test_cordoned_machines_get_no_traffic(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "cordon")
    a, b = (run(c, app, kit(demo_images)) for _ in range(2))
    assert c.post(f"/v1/apps/{app}/machines/{a['id']}/cordon").status_code == 200
    until(lambda: all(proxy_get(roost, app).headers["fly-machine-id"] == b["id"] for _ in range(5)))
    seen = {proxy_get(roost, app).headers["fly-machine-id"] for _ in range(10)}
    assert seen == {b["id"]}


def test_cold_requests_wake_one_machine(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "cold")
    machines = [create(c, app, kit(demo_images), skip_launch=True) for _ in range(2)]
    responses = asyncio.run(concurrent_gets(roost, app, "/", 20))
    assert [r.status_code for r in responses] == [200] * 20
    served = {r.headers["fly-machine-id"] for r in responses}
    assert len(served) == 1
    states = {m["id"]: get(c, app, m["id"])["state"] for m in machines}
    assert sorted(states.values()) == ["created", "started"]
    woken = served.pop()
    starts = [e for e in events(c, app, woken) if e["type"] == "start"]
    assert len(starts) == 1
    metrics = httpx.get(f"{roost.proxy_url}/metrics", timeout=5).text
    assert f'roost_proxy_wakeups_total{{app="{app}",machine="{woken}"}} 1' in metrics
    assert f'roost_proxy_wake_seconds_count{{app="{app}"}} 1' in metrics


def test_fly_replay_redispatches(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "replay")
    a = run(c, app, kit(demo_images))
    b = run(c, app, kit(demo_images))
    for target in (a, b, a):
        r = httpx.post(
            f"{roost.proxy_url}/cgi-bin/replay?{target['id']}",
            headers={"Host": f"{app}.localhost"},
            content=b"the body travels too",
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.headers["fly-machine-id"] == target["id"]
        first_line, body = r.text.split("\n", 1)
        assert first_line.startswith(f"served by {target['id']}")
        assert body == "the body travels too"
    # Every machine keeps sending it elsewhere: the hop limit ends it.
    assert proxy_get(roost, app, "/cgi-bin/away").status_code == 508


def test_upgrade_is_a_tunnel(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "ws")
    machine = run(c, app, kit(demo_images, internal_port=9000))
    with socket.create_connection(("127.0.0.1", roost.proxy_port), timeout=10) as s:
        s.sendall(
            f"GET /chat HTTP/1.1\r\nHost: {app}.localhost\r\nConnection: Upgrade\r\n"
            "Upgrade: echo\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        assert machine["id"].encode() in head
        rest = head.split(b"\r\n\r\n", 1)[1]
        for message in (b"ping\n", b"\x00\xffbinary\n", b"x" * 50_000 + b"\n"):
            s.sendall(message)
            echoed = rest
            while len(echoed) < len(message):
                echoed += s.recv(65536)
            rest = echoed[len(message) :]
            assert echoed[: len(message)] == message


def test_tcp_service_is_byte_for_byte(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    from roost.images.local_registry import free_port

    app = new_app(c, "tcp")
    port = free_port()
    run(c, app, kit(demo_images, tcp_port=port))
    payload = bytes(range(256)) * 400

    def echo() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            return got

    until(lambda: _port_open(port))
    assert echo() == payload


def test_client_disconnect_mid_body_frees_the_machine(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "drop")
    machine = run(c, app, kit(demo_images, hard=1))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", roost.proxy_port), timeout=10) as s:
            s.sendall(
                f"POST /cgi-bin/echo HTTP/1.1\r\nHost: {app}.localhost\r\n"
                "Content-Length: 1000000\r\n\r\npartial".encode()
            )
    # With hard_limit 1, a leaked in-flight count would make this queue and fail.
    until(lambda: _in_flight(roost, app, machine["id"]) == 0)
    assert proxy_get(roost, app).status_code == 200


def _in_flight(roost: RoostServer, app: str, mid: str) -> int:
    text = httpx.get(f"{roost.proxy_url}/metrics", timeout=5).text
    key = f'roost_proxy_in_flight{{app="{app}",machine="{mid}"}} '
    line = next((line for line in text.splitlines() if line.startswith(key)), key + "0")
    return int(line.split()[-1])


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def autostopping(
    tmp_path_factory: pytest.TempPathFactory, unreachable_routes: None, demo_images: dict[str, str]
) -> Iterator[RoostServer]:
    server = new_server(tmp_path_factory.mktemp("autostop"))
    server.autostop_interval = 0.5
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def test_autostop_keeps_min_machines_running(
    autostopping: RoostServer, demo_images: dict[str, str]
) -> None:
    c = autostopping.client()
    app = new_app(c, "idle")
    config = kit(demo_images, autostop="stop", minimum=1)
    machines = [run(c, app, config) for _ in range(3)]

    def states() -> list[str]:
        return sorted(get(c, app, m["id"])["state"] for m in machines)

    until(lambda: states() == ["started", "stopped", "stopped"], timeout=30)
    survivor = next(m["id"] for m in machines if get(c, app, m["id"])["state"] == "started")
    # Later passes leave the minimum running: waiting for it to stop times out.
    r = c.get(f"/v1/apps/{app}/machines/{survivor}/wait", params={"state": "stopped", "timeout": 2})
    assert r.status_code == 408
    assert states() == ["started", "stopped", "stopped"]
    metrics = httpx.get(f"{autostopping.proxy_url}/metrics", timeout=5).text
    assert metrics.count(f'roost_proxy_autostops_total{{app="{app}"') == 2
    # Traffic still flows to the one left, and wakes the others when it is busy.
    assert proxy_get(autostopping, app).headers["fly-machine-id"] == survivor


def test_standalone_proxy_follows_the_server(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    import subprocess

    from roost.images.local_registry import free_port
    from tests.fixtures.platform import roost_bin

    port = free_port()
    argv = [roost_bin(), "--api-url", roost.url, "--token", roost.token]
    argv += ["--data-dir", str(roost.data_dir), "proxy", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        until(lambda: _port_open(port) or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        # An app made after the proxy started, with its one machine stopped: the
        # proxy must see it and wake the machine through the server's API.
        app = new_app(c, "alone")
        machine = create(c, app, kit(demo_images), skip_launch=True)
        r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": f"{app}.localhost"}, timeout=30)
        assert r.status_code == 200 and r.headers["fly-machine-id"] == machine["id"]
        assert get(c, app, machine["id"])["state"] == "started"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_https_and_force_https(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "tls")
    config = kit(demo_images)
    config["services"][0]["ports"] = [
        {"port": 80, "handlers": ["http"], "force_https": True},
        {"port": 443, "handlers": ["tls", "http"]},
    ]
    machine = run(c, app, config)
    host = f"{app}.localhost"
    r = httpx.get(f"{roost.proxy_url}/x?y=1", headers={"Host": host}, timeout=10)
    assert r.status_code == 301
    assert r.headers["location"] == f"https://{host}:{roost.tls_port}/x?y=1"
    # Issued for the app's name by the server's local CA, which the client trusts.
    trust = ssl.create_default_context(cafile=roost.data_dir / "tls" / "ca.crt")
    with httpx.Client(verify=trust, timeout=10) as tls:
        r = tls.get(
            f"https://127.0.0.1:{roost.tls_port}/",
            headers={"Host": host},
            extensions={"sni_hostname": host},
        )
    assert r.status_code == 200 and r.text == f"hello from {machine['id']}\n"
