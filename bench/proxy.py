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
(no coordinated omission). Prints medians over the rounds and roost/nginx ratios.
Never asserts on time. Needs root, nginx and wrk (apt-get install nginx-light wrk).

    .venv/bin/python bench/proxy.py [--rounds 3] [--duration 10] [--rate RPS]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import re
import shutil
import subprocess
import time
from collections import deque
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import uvloop
from common import (
    Platform,
    free_port,
    host_nginx,
    http_service,
    median,
    ms,
    nginx_version,
    percentile,
    platform,
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

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"


# -- phase 1: wrk -----------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50: float
    p99: float
    errors: int


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, the 50% and 99% latency lines, and every kind of error wrk counts."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(r"Socket errors: (.*)", output):
        errors += sum(int(n) for n in re.findall(r"\d+", match.group(1)))
    return WrkResult(rps, p50, p99, errors)


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
class RateResult:
    rate: float
    """Responses per second actually completed in the measured window."""
    latencies: list[float]
    """Scheduled send → response complete, one per measured request."""
    lags: list[float]
    """Scheduled send → actually written: the generator's own lateness."""
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
        self.gen.sent(scheduled)
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
    _errors: int = 0
    _pending: int = 0
    _measure_from: float = math.inf
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
        try:
            await asyncio.wait_for(self._drained.wait(), 10.0)
        except TimeoutError:
            self._errors += self._pending  # never answered
        for conn in list(self._live):
            if conn.transport is not None:
                conn.transport.close()
        measured = self.duration * self.rate
        window = self.duration + max(0.0, max(self._latencies, default=0.0))
        return RateResult(len(self._latencies) / window * (measured and 1), self._latencies,
                          self._lags, self._errors)

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
        if self._idle:
            self._idle.pop().send(scheduled)
        else:
            self._backlog.append(scheduled)

    # -- connection callbacks ---------------------------------------------------------------

    def sent(self, scheduled: float) -> None:
        if scheduled >= self._measure_from:
            self._lags.append(time.perf_counter() - scheduled)

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
        if self._pending == 0 and self._drained is not None:
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
