"""Shared by the proxy and cold-start benchmarks: a platform to measure and small helpers.

:func:`platform` brings up, in order, the unreachable routes for the machine ranges,
a local registry and a real ``roost server`` (the test fixture's), and takes them down
in reverse order however the benchmark ends (exception, Ctrl-C, SIGTERM).
:func:`build_nginx_image` makes a machine image out of the host's nginx, a backend
fast enough that the proxy's own cost shows.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from tests.fixtures.platform import RoostServer

from roost.images.build import build_image, push, seed_demo_images
from roost.images.local_registry import LocalRegistry, free_port

UNREACHABLE = (("-4", "172.30.0.0/16"), ("-6", "fdaa::/16"))
NGINX_TAG = "latest"

# The backend: one process, no logging, keep-alive forever, a fixed 3-byte body.
NGINX_MACHINE_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 8080 backlog=4096;
        location / {
            default_type text/plain;
            return 200 "ok\\n";
        }
    }
}
"""


# -- numbers --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


# -- CPU accounting -------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (an nginx master and its worker)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return pids


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU the processes (all their threads) have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_probe() -> float:
    """Seconds a fixed pure-Python loop takes: how fast this shared VM is right now,
    to compare runs made at different times (lower is faster)."""
    t0 = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return time.perf_counter() - t0


def own_cpu_seconds() -> float:
    """CPU used by this process and its waited-for children (wrk) so far."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def host_busy_seconds() -> tuple[float, float]:
    """CPU time all cores spent so far (/proc/stat), in seconds: (on processes, plus time
    the hypervisor stole; on interrupts, i.e. mostly the kernel moving packets)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + steal) / tick, (irq + softirq) / tick


def cgroup_cpu_seconds(cgroup: str) -> float:
    """CPU used by everything under a cgroup v1 path (a server's machines), ns precision."""
    usage = Path("/sys/fs/cgroup/cpuacct") / cgroup.lstrip("/") / "cpuacct.usage"
    try:
        return int(usage.read_text()) / 1e9
    except OSError:
        return 0.0


# -- network --------------------------------------------------------------------------------


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Until ``host:port`` accepts a TCP connection (polled every 0.5 ms)."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.05):
                return
        except OSError:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{host}:{port} never accepted") from None
            time.sleep(0.0005)


@contextmanager
def unreachable_routes() -> Iterator[None]:
    """No packet to a machine address may leave the VM: routes first, removed last.

    Only routes this call added are removed, so a test session running beside us
    keeps its own.
    """
    added = []
    try:
        for family, net in UNREACHABLE:
            present = subprocess.run(
                ["ip", family, "route", "show", "type", "unreachable", net],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if not present:
                subprocess.run(["ip", family, "route", "add", "unreachable", net], check=True)
                added.append((family, net))
        yield
    finally:
        for family, net in added:
            subprocess.run(["ip", family, "route", "del", "unreachable", net], check=False)


def ipv4_of(private_ip: str, server: RoostServer) -> str:
    """The machine's IPv4: same offset in the v4 subnet as its IPv6 in the v6 one."""
    v6 = ipaddress.IPv6Address(private_ip)
    index = int(v6) - int(ipaddress.IPv6Network(server.v6_subnet).network_address)
    return str(ipaddress.IPv4Network(server.v4_subnet).network_address + index)


# -- the platform ---------------------------------------------------------------------------


@dataclass
class Machine:
    app: str
    id: str
    ip: str

    @property
    def path(self) -> str:
        return f"/v1/apps/{self.app}/machines/{self.id}"


@dataclass
class Platform:
    tmp: Path
    registry: LocalRegistry
    server: RoostServer
    api: httpx.Client

    def demo_images(self) -> dict[str, str]:
        return asyncio.run(seed_demo_images(self.registry.addr, self.tmp / "build"))

    def nginx_image(self) -> str:
        return asyncio.run(build_nginx_image(self.tmp / "nginx-image", self.registry.addr))

    def create_machine(self, app: str, config: dict[str, Any]) -> Machine:
        self.api.post("/v1/apps", json={"name": app}).raise_for_status()
        response = self.api.post(f"/v1/apps/{app}/machines", json={"config": config})
        response.raise_for_status()
        body = response.json()
        machine = Machine(app, body["id"], ipv4_of(body["private_ip"], self.server))
        self.wait(machine, "started")
        return machine

    def wait(self, machine: Machine, state: str) -> None:
        params = {"state": state, "timeout": 30}
        self.api.get(f"{machine.path}/wait", params=params).raise_for_status()

    def stop(self, machine: Machine) -> None:
        self.api.post(f"{machine.path}/stop").raise_for_status()
        self.wait(machine, "stopped")


def http_service(*, soft: int, hard: int, internal_port: int = 8080) -> dict[str, Any]:
    """The service the proxy routes ``Host: APP.localhost`` to."""
    return {
        "protocol": "tcp",
        "internal_port": internal_port,
        "ports": [{"port": 80, "handlers": ["http"]}],
        "concurrency": {"type": "requests", "soft_limit": soft, "hard_limit": hard},
        "autostart": True,
        "autostop": False,
    }


@contextmanager
def platform(prefix: str, server_args: Sequence[str] = ()) -> Iterator[Platform]:
    """Routes, a registry and a ``roost server`` in a temp dir; all undone on the way out."""
    with ExitStack() as stack:
        stack.enter_context(sigterm_as_exit())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        stack.enter_context(unreachable_routes())
        registry = LocalRegistry(tmp / "registry", f"127.0.0.1:{free_port()}")
        asyncio.run(registry.start())
        stack.callback(lambda: asyncio.run(registry.stop()))
        server = private_server(tmp / "roost")
        server.extra_args = list(server_args)
        stack.callback(server.cleanup)
        server.start()
        api = stack.enter_context(server.client())
        yield Platform(tmp, registry, server, api)


def private_server(tmp: Path) -> RoostServer:
    """A server whose machine subnet and netns prefix no running server uses.

    The test fixture's ``new_server`` derives both from a slot that two processes can
    share; then both bridges route the same /24 (our requests could reach the other
    server's machines) and each server's cleanup deletes the other's netns by prefix.
    Slots are tried from the top, where the fixture rarely lands.
    """
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in netns.splitlines() if line.strip()]
    for slot in range(119, 0, -1):
        server = RoostServer(data_dir=tmp / f"server-{slot}" / "data", slot=slot)
        subnet_used = f"{server.v4_subnet} " in routes
        prefix_used = any(name.startswith(server.netns_prefix) for name in names)
        if not subnet_used and not prefix_used:
            return server
    raise SystemExit("no free machine subnet for a benchmark server")


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C does, so every cleanup runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- an nginx machine image -------------------------------------------------------------------


def host_nginx() -> Path:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise SystemExit("nginx is not installed: apt-get install -y nginx-light")
    return Path(found)


def nginx_version() -> str:
    out = subprocess.run([host_nginx(), "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def shared_libraries(binary: Path) -> list[Path]:
    """What ``ldd`` says ``binary`` loads, the dynamic loader included (vdso excluded)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True)
    libs = []
    for line in out.stdout.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            target = words[words.index("=>") + 1]
            if target.startswith("/"):
                libs.append(Path(target))
        elif words and words[0].startswith("/"):
            libs.append(Path(words[0]))  # the loader: "/lib64/ld-linux-x86-64.so.2 (0x...)"
    return libs


def nginx_image_files() -> dict[str, bytes | Path]:
    nginx = host_nginx()
    files: dict[str, bytes | Path] = {
        "/usr/sbin/nginx": nginx,
        "/etc/nginx/nginx.conf": NGINX_MACHINE_CONF.encode(),
        "/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        "/etc/group": b"root:x:0:\nnogroup:x:65534:\n",
        "/var/lib/nginx/.keep": b"",
        "/var/log/nginx/.keep": b"",
    }
    # Each library under the name ldd gives, with the content of the file the host's
    # symlinks end at: the loader looks libraries up by that name only.
    for lib in shared_libraries(nginx):
        files[str(lib)] = lib.resolve()
    return files


async def build_nginx_image(workdir: Path, registry_addr: str) -> str:
    """Build the nginx backend image, push it, return its reference."""
    layout = await build_image(
        workdir,
        tag=NGINX_TAG,
        files=nginx_image_files(),
        entrypoint=["/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/nginx/nginx.conf"],
        cmd=[],
        exposed_ports=(8080,),
    )
    ref = f"{registry_addr}/bench/nginx:{NGINX_TAG}"
    await push(layout, NGINX_TAG, ref)
    await asyncio.to_thread(shutil.rmtree, workdir)
    return ref


def http_get(host: str, port: int, header_host: str, timeout: float = 30.0) -> tuple[int, float]:
    """One ``GET /`` on a new connection: (status, seconds from connect to first byte)."""
    request = f"GET / HTTP/1.1\r\nHost: {header_host}\r\nConnection: close\r\n\r\n".encode()
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        first = sock.recv(1)
        elapsed = time.perf_counter() - t0
        rest = bytearray(first)
        while chunk := sock.recv(65536):
            rest += chunk
    status = int(rest.split(b" ", 2)[1]) if rest.startswith(b"HTTP/1.") else 0
    return status, elapsed
