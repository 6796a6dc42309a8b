"""Throughput and added latency of roost's proxy, beside nginx as a reverse proxy and direct.

One backend for all three targets: nginx (the host's binary, one process, a fixed
3-byte body, keep-alive) running as a real roost machine under runc. In the same run:

* direct: ``http://MACHINE_IPV4:8080/``;
* nginx:  the host's nginx as a reverse proxy (1 worker, upstream keep-alive pool);
* roost:  roost's proxy port with ``Host: bench.localhost``.

Phase 1, maximum throughput: ``wrk`` with the same threads/connections/duration for
each target, rounds interleaved. Phase 2, added latency at half load: an open-loop,
fixed-rate generator (below) at half of roost's median wrk rate, latency measured from
each request's *scheduled* send time, so a stall is charged to every request it delays
(no coordinated omission). Prints medians over the rounds, roost/nginx ratios, and
the CPU time per request spent by each proxy's processes (/proc) and by the machine
(its cpuacct cgroup), which says where the time goes.
Never asserts on time. Needs root, nginx and wrk (apt-get install nginx-light wrk).

    .venv/bin/python bench/proxy.py [--rounds 3] [--duration 10] [--load 0.5 0.25 ...]
    .venv/bin/python bench/proxy.py --skip-wrk --rate 1000 2000   # fixed rates only
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httptools
import httpx
import uvloop
from common import (
    Platform,
    cgroup_cpu_seconds,
    cpu_probe,
    cpu_seconds,
    free_port,
    host_busy_seconds,
    host_nginx,
    http_service,
    median,
    ms,
    nginx_version,
    own_cpu_seconds,
    percentile,
    platform,
    process_tree,
    wait_port,
)

APP = "bench"
TARGETS = ("direct", "nginx", "roost")
TICK = 0.001  # the generator's timer: uvloop busy-spins on sleeps below 1 ms

# The host's nginx as a reverse proxy to the machine: one worker, as roost is one
# process; an upstream keep-alive pool, as roost keeps one; X-Forwarded-* headers,
# as roost adds them.
NGINX_PROXY_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    upstream machine {{
        server {backend};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://machine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    header_host: str
    root_pid: int | None = None
    """The proxy's (main) process, for its CPU cost per request (none for direct)."""

    @property
    def pids(self) -> list[int]:
        # Looked up when measuring: nginx forks its worker after it starts listening.
        return process_tree(self.root_pid) if self.root_pid else []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


# -- CPU cost per request ---------------------------------------------------------------------


@dataclass
class Costed:
    requests: int = field(default=0, kw_only=True)
    proxy_cpu: float = field(default=0.0, kw_only=True)
    """CPU seconds per request used by the proxy's processes."""
    backend_cpu: float = field(default=0.0, kw_only=True)
    """CPU seconds per request used by the machine (its cgroup)."""
    client_cpu: float = field(default=0.0, kw_only=True)
    """CPU seconds per request used by the load generator (wrk, or this process)."""
    irq: float = field(default=0.0, kw_only=True)
    """Cores busy in interrupts meanwhile: mostly the kernel moving the packets (its
    softirq time is charged to no process)."""
    others: float = field(default=0.0, kw_only=True)
    """Cores busy with other processes meanwhile (other work on the VM, kernel threads,
    hypervisor steal): the noise this run shared the 2 cores with."""


R = TypeVar("R", bound=Costed)


def metered(target: Target, machines_cgroup: str, run: Callable[[], R]) -> R:
    """``run()``, with the CPU the proxy and the machine spent on it per request."""
    pids = target.pids

    def now() -> tuple[float, ...]:
        return (
            cpu_seconds(pids),
            cgroup_cpu_seconds(machines_cgroup),
            own_cpu_seconds(),
            *host_busy_seconds(),
            time.perf_counter(),
        )

    before = now()
    result = run()
    deltas = (b - a for a, b in zip(before, now(), strict=True))
    proxy, backend, client, busy, irq, wall = deltas
    requests = max(1, result.requests)
    result.proxy_cpu = proxy / requests
    result.backend_cpu = backend / requests
    result.client_cpu = client / requests
    result.irq = irq / wall
    result.others = max(0.0, busy - proxy - backend - client) / wall
    return result


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


# -- phase 1: wrk -----------------------------------------------------------------------------


@dataclass
class WrkResult(Costed):
    rps: float
    p50: float
    p99: float
    errors: int


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _find(pattern: str, output: str) -> str:
    match = re.search(pattern, output, re.MULTILINE)
    if match is None:
        raise ValueError(f"unexpected wrk output (no {pattern!r}):\n{output}")
    return match.group(1)


def _seconds(text: str) -> float:
    number, unit = _find(r"^([\d.]+)(?:us|ms|s|m)$", text), text.lstrip("0123456789.")
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, the 50% and 99% latency lines, and every kind of error wrk counts."""
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(r"Socket errors: (.*)", output):
        errors += sum(int(n) for n in re.findall(r"\d+", match.group(1)))
    return WrkResult(
        rps=float(_find(r"Requests/sec:\s+([\d.]+)", output)),
        p50=_seconds(_find(r"^\s+50%\s+(\S+)", output)),
        p99=_seconds(_find(r"^\s+99%\s+(\S+)", output)),
        errors=errors,
        requests=int(_find(r"(\d+) requests in", output)),
    )


def run_wrk(target: Target, threads: int, connections: int, duration: int) -> WrkResult:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    argv += ["-H", f"Host: {target.header_host}", target.url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 60)
    return parse_wrk(out.stdout)


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (out.stdout + out.stderr).split(" [")[0].removeprefix("wrk ").strip()


# -- phase 2: an open-loop, fixed-rate generator ---------------------------------------------


@dataclass
class RateResult(Costed):
    rate: float
    """Requests per second dispatched in the measured window."""
    latencies: list[float]
    """Scheduled send → response complete, one per measured request."""
    lags: list[float]
    """Scheduled send → handed to a connection or the backlog: the generator's own
    lateness (its timer tick, its CPU share), not the target's."""
    errors: int

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, gen: FixedRate) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.scheduled = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.gen.lost(self)
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        self.gen.completed(self, self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


@dataclass
class FixedRate:
    """Sends ``rate`` requests a second on a schedule, whatever the responses do.

    Request *k* is due at ``t0 + k / rate``. Every tick (~1 ms), every request due so
    far goes out on an idle connection, or waits in a backlog until one frees up; its
    latency runs from the due time, so time spent waiting for a connection counts.
    The first ``warmup`` seconds are sent but not measured.
    """

    host: str
    port: int
    header_host: str
    rate: float
    duration: float
    connections: int = 32
    warmup: float = 1.0
    request: bytes = b""
    _idle: list[_Conn] = field(default_factory=list)
    _backlog: deque[float] = field(default_factory=deque)
    _live: set[_Conn] = field(default_factory=set)
    _latencies: list[float] = field(default_factory=list)
    _lags: list[float] = field(default_factory=list)
    _sent_at: list[float] = field(default_factory=list)
    _errors: int = 0
    _pending: int = 0
    _measure_from: float = math.inf
    _scheduled_all: bool = False
    _drained: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self.request = f"GET / HTTP/1.1\r\nHost: {self.header_host}\r\n\r\n".encode()

    async def run(self) -> RateResult:
        loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        for _ in range(self.connections):
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
            self._idle.append(conn)
            self._live.add(conn)
        total = int(self.rate * (self.warmup + self.duration))
        t0 = time.perf_counter() + 0.01
        self._measure_from = t0 + self.warmup
        await self._schedule(t0, total)
        self._scheduled_all = True
        self._check_drained()
        try:
            await asyncio.wait_for(self._drained.wait(), 10.0)
        except TimeoutError:
            self._errors += self._pending  # never answered
        for conn in list(self._live):
            if conn.transport is not None:
                conn.transport.close()
        return RateResult(
            self._send_rate(), self._latencies, self._lags, self._errors, requests=total
        )

    def _send_rate(self) -> float:
        """Requests dispatched per second over the measured window."""
        if len(self._sent_at) < 2:
            return 0.0
        return (len(self._sent_at) - 1) / (self._sent_at[-1] - self._sent_at[0])

    async def _schedule(self, t0: float, total: int) -> None:
        sent = 0
        while sent < total:
            now = time.perf_counter()
            due = min(total, math.floor((now - t0) * self.rate) + 1)
            for k in range(sent, due):
                self._dispatch(t0 + k / self.rate)
            sent = max(sent, due)
            next_due = t0 + sent / self.rate
            await asyncio.sleep(max(TICK, next_due - time.perf_counter()))

    def _dispatch(self, scheduled: float) -> None:
        self._pending += 1
        if scheduled >= self._measure_from:
            now = time.perf_counter()
            self._sent_at.append(now)
            self._lags.append(now - scheduled)
        if self._idle:
            self._idle.pop().send(scheduled)
        else:
            self._backlog.append(scheduled)

    # -- connection callbacks ---------------------------------------------------------------

    def completed(self, conn: _Conn, status: int) -> None:
        now = time.perf_counter()
        if conn.scheduled >= self._measure_from:
            if status == 200:
                self._latencies.append(now - conn.scheduled)
            else:
                self._errors += 1
        self._pending -= 1
        if self._backlog:
            conn.send(self._backlog.popleft())
        else:
            self._idle.append(conn)
        self._check_drained()

    def lost(self, conn: _Conn) -> None:
        if conn not in self._live:
            return
        self._live.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        else:  # a request was in flight on it
            self._errors += 1
            self._pending -= 1
        self._check_drained()

    def _check_drained(self) -> None:
        if self._scheduled_all and self._pending == 0 and self._drained is not None:
            self._drained.set()


def run_fixed_rate(target: Target, rate: float, duration: float, connections: int) -> RateResult:
    gen = FixedRate(target.host, target.port, target.header_host, rate, duration, connections)
    # The generator's own GC pauses would be charged to the target.
    gc.collect()
    gc.disable()
    try:
        return uvloop.run(gen.run())
    finally:
        gc.enable()


# -- the three targets ----------------------------------------------------------------------


@contextmanager
def nginx_proxy(workdir: Path, backend: str) -> Iterator[tuple[int, int]]:
    """The host's nginx as a reverse proxy to ``backend``; yields (master pid, port)."""
    workdir.mkdir(parents=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_PROXY_CONF.format(dir=workdir, backend=backend, port=port))
    argv = [str(host_nginx()), "-p", f"{workdir}/", "-e", str(workdir / "error.log")]
    proc = subprocess.Popen([*argv, "-c", str(conf)], stdin=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port)
        yield proc.pid, port
    finally:
        # TERM to the master: it takes its worker down with it.
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def machine_config(image: str) -> dict[str, object]:
    # Limits high enough that the router never queues: this measures the data path.
    return {"image": image, "services": [http_service(soft=1000, hard=10000)]}


def check_targets(targets: list[Target], machine_id: str) -> None:
    """Each target answers 200 ``ok``, and roost's answer came from our machine (a
    subnet clash with another server would send "direct" to someone else's)."""
    for target in targets:
        response = httpx.get(
            target.url, headers={"Host": target.header_host}, timeout=5, trust_env=False
        )
        if response.status_code != 200 or response.text != "ok\n":
            raise SystemExit(
                f"{target.name} does not answer as expected: {response.status_code}"
                f" {response.headers} {response.text[:200]!r}"
            )
        served_by = response.headers.get("fly-machine-id", machine_id)
        if served_by != machine_id:
            raise SystemExit(f"{target.name} was served by machine {served_by}")


# -- the run ----------------------------------------------------------------------------------


def rotations(rounds: int) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Round r runs the targets in an order rotated by r, so none is always first."""
    for r in range(rounds):
        shift = r % len(TARGETS)
        yield r, TARGETS[shift:] + TARGETS[:shift]


def cost_line(result: Costed) -> str:
    return (
        f"CPU/req: proxy {us(result.proxy_cpu)} machine {us(result.backend_cpu)}"
        f" client {us(result.client_cpu)} us; cores: irq {result.irq:.2f}"
        f" others {result.others:.2f}"
    )


def phase_wrk(bench: Bench, args: argparse.Namespace) -> dict[str, list[WrkResult]]:
    results: dict[str, list[WrkResult]] = {name: [] for name in TARGETS}
    for r, order in rotations(args.rounds):
        for name in order:
            target = bench.targets[name]

            def run(target: Target = target) -> WrkResult:
                return run_wrk(target, args.threads, args.connections, args.duration)

            result = metered(target, bench.machines_cgroup, run)
            results[name].append(result)
            print(
                f"  wrk  round {r + 1} {name:>6}: {result.rps:6.0f} rps  p50 {ms(result.p50)} ms"
                f"  p99 {ms(result.p99)} ms  errors {result.errors}  {cost_line(result)}",
                flush=True,
            )
    return results


def phase_rate(bench: Bench, rate: float, args: argparse.Namespace) -> dict[str, list[RateResult]]:
    results: dict[str, list[RateResult]] = {name: [] for name in TARGETS}
    for r, order in rotations(args.rounds):
        for name in order:
            target = bench.targets[name]

            def run(target: Target = target) -> RateResult:
                return run_fixed_rate(target, rate, args.duration, args.rate_connections)

            result = metered(target, bench.machines_cgroup, run)
            results[name].append(result)
            print(
                f"  rate round {r + 1} {name:>6}: sent {result.rate:5.0f}/s  p50 {ms(result.p50)}"
                f" ms  p99 {ms(result.p99)} ms  gen lag p99 {ms(percentile(result.lags, 0.99))}"
                f" ms  errors {result.errors}  {cost_line(result)}",
                flush=True,
            )
    return results


CPU_HEADER = (
    "proxy CPU us/req | machine CPU us/req | client CPU us/req | irq, cores | others, cores"
)


def cpu_cells(runs: list[WrkResult] | list[RateResult], name: str) -> str:
    proxy = "—" if name == "direct" else us(median([x.proxy_cpu for x in runs]))
    backend = us(median([x.backend_cpu for x in runs]))
    client = us(median([x.client_cpu for x in runs]))
    irq, others = median([x.irq for x in runs]), median([x.others for x in runs])
    return f"{proxy} | {backend} | {client} | {irq:.2f} | {others:.2f}"


def report_wrk(results: dict[str, list[WrkResult]], args: argparse.Namespace) -> None:
    print(
        f"\nmaximum throughput: wrk -t{args.threads} -c{args.connections} -d{args.duration}s"
        f" --latency, median of {args.rounds} rounds"
    )
    print(f"| target | rps | p50 | p99 | errors | {CPU_HEADER} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rps = {}
    for name in TARGETS:
        runs = results[name]
        rps[name] = median([x.rps for x in runs])
        print(
            f"| {name} | {rps[name]:.0f} | {ms(median([x.p50 for x in runs]))} ms"
            f" | {ms(median([x.p99 for x in runs]))} ms | {sum(x.errors for x in runs)}"
            f" | {cpu_cells(runs, name)} |"
        )
    print(f"roost / nginx rps: {rps['roost'] / rps['nginx']:.2f}x   (goal >= 0.5x)")
    print(f"roost / direct rps: {rps['roost'] / rps['direct']:.2f}x")


def report_rate(
    results: dict[str, list[RateResult]], rate: float, args: argparse.Namespace
) -> None:
    print(
        f"\nadded latency at {rate:.0f} req/s (open loop, {args.rate_connections} keep-alive"
        f" connections, {args.duration} s per run after 1 s warm-up), median of"
        f" {args.rounds} rounds"
    )
    print(
        "| target | sent/s | p50 | p99 | added p50 | added p99 | gen lag p99 | errors"
        f" | {CPU_HEADER} |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    p50 = {n: median([x.p50 for x in results[n]]) for n in TARGETS}
    p99 = {n: median([x.p99 for x in results[n]]) for n in TARGETS}
    for name in TARGETS:
        runs = results[name]
        direct = name == "direct"
        added50 = "—" if direct else f"{ms(p50[name] - p50['direct'])} ms"
        added99 = "—" if direct else f"{ms(p99[name] - p99['direct'])} ms"
        lag = median([percentile(x.lags, 0.99) for x in runs])
        print(
            f"| {name} | {median([x.rate for x in runs]):.0f} | {ms(p50[name])} ms"
            f" | {ms(p99[name])} ms | {added50} | {added99} | {ms(lag)} ms"
            f" | {sum(x.errors for x in runs)} | {cpu_cells(runs, name)} |"
        )
    print("(goal: roost's added p99 <= 1 ms at half load, i.e. at 0.5 x roost's wrk rps)")


@dataclass
class Bench:
    targets: dict[str, Target]
    machines_cgroup: str


def setup(stack: ExitStack) -> Bench:
    """The machine, the host nginx in front of it, and the three targets; ``stack``
    undoes it all."""
    plat: Platform = stack.enter_context(platform("roost-bench-proxy-"))
    machine = plat.create_machine(APP, machine_config(plat.nginx_image()))
    backend = f"{machine.ip}:8080"
    nginx_pid, nginx_port = stack.enter_context(nginx_proxy(plat.tmp / "nginx-proxy", backend))
    assert plat.server.proc is not None
    targets = {
        "direct": Target("direct", machine.ip, 8080, backend),
        "nginx": Target("nginx", "127.0.0.1", nginx_port, f"{APP}.localhost", nginx_pid),
        "roost": Target(
            "roost",
            "127.0.0.1",
            plat.server.proxy_port,
            f"{APP}.localhost",
            plat.server.proc.pid,
        ),
    }
    check_targets(list(targets.values()), machine.id)
    print(f"backend: nginx in machine {machine.id} at {backend}; host nginx proxy: 1 worker")
    return Bench(targets, plat.server.cgroup_parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument(
        "--load",
        type=float,
        nargs="+",
        default=[0.5],
        help="fixed rates as fractions of roost's median wrk rps (default: 0.5)",
    )
    parser.add_argument("--rate", type=float, nargs="+", help="fixed rates in req/s instead")
    parser.add_argument("--rate-connections", type=int, default=32)
    parser.add_argument("--skip-wrk", action="store_true", help="only the fixed-rate phase")
    args = parser.parse_args()
    if args.skip_wrk and not args.rate:
        parser.error("--skip-wrk needs --rate")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    print(f"wrk {wrk_version()}, nginx {nginx_version()} (backend and reverse proxy)")
    probe = cpu_probe()
    with ExitStack() as stack:
        bench = setup(stack)
        wrk_results = None if args.skip_wrk else phase_wrk(bench, args)
        if args.rate:
            rates = args.rate
        else:
            roost_max = median([x.rps for x in (wrk_results or {})["roost"]])
            rates = [roost_max * load for load in args.load]
        rate_results = [(rate, phase_rate(bench, rate, args)) for rate in rates]
    print(f"\nCPU probe (fixed Python loop): {ms(probe)} ms before, {ms(cpu_probe())} ms after")
    if wrk_results is not None:
        report_wrk(wrk_results, args)
    for rate, results in rate_results:
        report_rate(results, rate, args)


if __name__ == "__main__":
    main()
