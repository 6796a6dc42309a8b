"""Cold start through the proxy: every machine stopped → first response byte.

One app with one machine (the demo ``roost/hello`` busybox httpd by default, or the
nginx image of bench/proxy.py) behind a service with autostart. Each run, on a real
``roost server``:

* cold:  stop the machine through the API and wait for ``stopped``; then ``GET /``
  on the proxy port with ``Host: cold.localhost`` on a new connection, timed from
  connect to the first response byte (the proxy starts the machine and holds the
  request until its port accepts);
* warm:  the same GET again, the machine now started;
* start: stop it again, then ``POST .../start`` until the machine's port accepts (as
  bench/start_latency.py), so cold is compared with a start in the same conditions.

Any answer but 200 (or no answer) is an error. Prints p50/p95 of each and cold - start.
Never asserts on time. Needs root.

    .venv/bin/python bench/cold_start.py [--runs 30] [--image hello|nginx]
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field

import httpx
from common import (
    Machine,
    Platform,
    cpu_probe,
    http_get,
    http_service,
    median,
    ms,
    percentile,
    platform,
    wait_port,
)

APP = "cold"


@dataclass
class Samples:
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    cold_minus_start: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: {"cold": 0, "warm": 0, "start": 0})


class ColdStart:
    def __init__(self, plat: Platform, machine: Machine, settle: float) -> None:
        self.plat = plat
        self.machine = machine
        self.settle = settle
        self.samples = Samples()

    def stopped(self) -> None:
        self.plat.stop(self.machine)
        # The proxy learns of the stop through a store watch; give it a moment, as a
        # machine that is "all stopped" has been for a while in real use.
        time.sleep(self.settle)

    def get(self, kind: str) -> float | None:
        """One GET through the proxy: seconds to the first byte, None on an error."""
        try:
            status, elapsed = http_get("127.0.0.1", self.plat.server.proxy_port, f"{APP}.localhost")
        except OSError as exc:
            print(f"  {kind}: {exc}")
            status, elapsed = 0, 0.0
        if status != 200:
            self.samples.errors[kind] += 1
            print(f"  {kind}: status {status}")
            return None
        return elapsed

    def start(self) -> float | None:
        t0 = time.perf_counter()
        try:
            self.plat.api.post(f"{self.machine.path}/start").raise_for_status()
            wait_port(self.machine.ip, 8080)
        except (httpx.HTTPError, TimeoutError) as exc:
            self.samples.errors["start"] += 1
            print(f"  start: {exc}")
            return None
        return time.perf_counter() - t0

    def one(self) -> None:
        self.stopped()
        cold = self.get("cold")
        warm = self.get("warm")
        self.stopped()
        start = self.start()
        s = self.samples
        for values, value in ((s.cold, cold), (s.warm, warm), (s.start, start)):
            if value is not None:
                values.append(value)
        if cold is not None and start is not None:
            s.cold_minus_start.append(cold - start)


def wake_totals(plat: Platform) -> tuple[float, int]:
    """The proxy's own wake-up time (its start call → port accepting): sum and count."""
    text = httpx.get(f"{plat.server.proxy_url}/metrics", timeout=5, trust_env=False).text

    def value(name: str) -> float:
        match = re.search(rf'^roost_proxy_wake_seconds_{name}{{app="{APP}"}} (\S+)', text, re.M)
        return float(match.group(1)) if match else 0.0

    return value("sum"), int(value("count"))


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | — | — | — | 0 |"
    p50, p95 = median(values), percentile(values, 0.95)
    return f"| {name} | {ms(p50)} ms | {ms(p95)} ms | {ms(max(values))} ms | {len(values)} |"


def report(s: Samples, image: str, wake: tuple[float, int]) -> None:
    print(f"\ncold start through the proxy ({image}), {len(s.cold)} runs")
    print("| measure | p50 | p95 | max | n |")
    print("|---|---|---|---|---|")
    print(row("cold: GET → first byte, machine stopped", s.cold))
    print(row("warm: GET → first byte, machine started", s.warm))
    print(row("start: POST start → port accepting", s.start))
    print(row("cold - start, per run", s.cold_minus_start))
    errors = ", ".join(f"{k} {v}" for k, v in s.errors.items())
    print(f"errors: {errors}")
    print(f"proxy's wake-up (its start call → port accepting): mean {ms(wake[0])} ms, n={wake[1]}")
    if s.cold and s.start:
        gap = median(s.cold) - median(s.start)
        met = gap <= 0.050 and not any(s.errors.values())
        print(
            f"cold p50 - start p50 = {ms(gap)} ms  (goal: <= 50 ms, zero errors:"
            f" {'met' if met else 'not met'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--image", choices=("hello", "nginx"), default="hello")
    parser.add_argument(
        "--settle", type=float, default=0.1, help="seconds between 'stopped' and the request"
    )
    args = parser.parse_args()
    probe = cpu_probe()
    with platform("roost-bench-cold-") as plat:
        demo = args.image == "hello"
        image = plat.demo_images()["roost/hello"] if demo else plat.nginx_image()
        config = {"image": image, "services": [http_service(soft=20, hard=100)]}
        machine = plat.create_machine(APP, config)
        bench = ColdStart(plat, machine, args.settle)
        bench.one()  # warm-up, not counted
        bench.samples = Samples()
        wake0 = wake_totals(plat)
        for i in range(args.runs):
            bench.one()
            if (i + 1) % 10 == 0:
                print(f"  {i + 1} runs", flush=True)
        wake1 = wake_totals(plat)
        wakes = wake1[1] - wake0[1]
        wake = ((wake1[0] - wake0[0]) / wakes if wakes else 0.0), wakes
    print(f"\nCPU probe (fixed Python loop): {ms(probe)} ms before, {ms(cpu_probe())} ms after")
    report(bench.samples, f"{args.image} image: {image.split('/', 1)[1]}", wake)


if __name__ == "__main__":
    main()
