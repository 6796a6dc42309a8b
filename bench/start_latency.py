"""Start of a stopped machine, API call → its port accepting, beside bare `runc run`.

Both sides run the same image rootfs (the demo busybox httpd), the same runc
config (limits, tini as PID 1, a prepared network namespace) in the same run:

* roost: ``POST /v1/apps/A/machines/M/start`` on a real ``roost server``, then
  connect to the machine's port until it accepts.
* bare: ``runc run -d`` of an equivalent bundle whose overlay and netns already
  exist, then the same connect loop.

Prints p50/p95 of each and the ratio. Never asserts on time. Needs root.

    .venv/bin/python bench/start_latency.py [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.platform import new_server

from roost.images.base import Image
from roost.images.build import seed_demo_images
from roost.images.local_registry import LocalRegistry, free_port
from roost.images.store import ImageStore
from roost.net.host import HostNetwork
from roost.net.ipam import MachineAddressing
from roost.net.machine import MachineNetworks
from roost.runtime import oci
from roost.runtime.base import LaunchSpec, ProcessSpec
from roost.runtime.runc import DEFAULT_INIT, mount_overlay, unmount_all

BARE_ID = "benchbare0000"


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.05):
                return
        except OSError:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{host}:{port} never accepted") from None
            time.sleep(0.0005)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, samples: list[float]) -> tuple[float, float]:
    p50, p95 = statistics.median(samples), percentile(samples, 0.95)
    print(f"{name:>8}: p50 {p50 * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms   (n={len(samples)})")
    return p50, p95


class RoostSide:
    """A machine on a real ``roost server``; each sample: POST start → port accepting."""

    def __init__(self, image: str, tmp: Path) -> None:
        self.server = new_server(tmp)
        self.server.start()
        self.client = self.server.client()
        self.client.post("/v1/apps", json={"name": "bench"}).raise_for_status()
        body = {"config": {"image": image}}
        machine = self.client.post("/v1/apps/bench/machines", json=body).json()
        self.base = f"/v1/apps/bench/machines/{machine['id']}"
        self._wait("started")
        self.ip = _ipv4(machine["private_ip"], self.server)

    def _wait(self, state: str) -> None:
        params = {"state": state, "timeout": 30}
        self.client.get(f"{self.base}/wait", params=params).raise_for_status()

    def one(self) -> float:
        self.client.post(f"{self.base}/stop").raise_for_status()
        self._wait("stopped")
        t0 = time.perf_counter()
        self.client.post(f"{self.base}/start").raise_for_status()
        wait_port(self.ip, 8080)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.server.cleanup()


class BareSide:
    """``runc run -d`` of an equivalent bundle: same rootfs, config, init and netns."""

    def __init__(self, image_ref: str, tmp: Path) -> None:
        self.tmp = tmp
        self.mdir = tmp / "bare"
        self.runc = ["runc", "--root", str(tmp / "runc")]
        devnull = subprocess.DEVNULL
        self.quiet: dict[str, Any] = {"stdin": devnull, "stdout": devnull, "stderr": devnull}
        self.runs = 0
        self.image, self.host, self.nets, spec, self.ip = asyncio.run(self._network(image_ref))
        (self.mdir / "bundle").mkdir(parents=True)
        (self.mdir / "hosts").write_text(oci.hosts_file(spec))
        (self.mdir / "resolv.conf").write_text("")
        config = oci.build_config(
            spec,
            root_path=self.mdir / "rootfs",
            cgroups_path=f"/roost-bench/{BARE_ID}",
            hosts_path=self.mdir / "hosts",
            resolv_path=self.mdir / "resolv.conf",
            nofile=20000,
            init=DEFAULT_INIT if DEFAULT_INIT.exists() else None,
        )
        (self.mdir / "bundle/config.json").write_text(json.dumps(config))

    async def _network(
        self, image_ref: str
    ) -> tuple[Image, HostNetwork, MachineNetworks, LaunchSpec, str]:
        images = ImageStore(self.tmp / "images")
        image = await images.pull(image_ref)
        await images.aclose()
        addressing = MachineAddressing("172.30.250.0/24", "fdaa:0:250::/64")
        host = HostNetwork("rstbench", addressing)
        await host.setup()
        nets = MachineNetworks("rstbench", addressing, "rstb-")
        netns = await nets.create(BARE_ID, 2)
        argv = [*image.config.entrypoint, *image.config.cmd]
        spec = LaunchSpec(BARE_ID, image.rootfs, ProcessSpec(argv=argv, env={}), netns=netns)
        return image, host, nets, spec, str(addressing.address(2).v4)

    def one(self) -> float:
        # A fresh writable layer, as roost gives each start; not timed, in bare's favour.
        layer = self.mdir / f"layer{self.runs}"
        self.runs += 1
        (layer / "upper").mkdir(parents=True)
        (layer / "work").mkdir()
        (self.mdir / "rootfs").mkdir(exist_ok=True)
        mount_overlay(self.image.rootfs, layer / "upper", layer / "work", self.mdir / "rootfs")
        bundle = str(self.mdir / "bundle")
        t0 = time.perf_counter()
        subprocess.run([*self.runc, "run", "-d", "-b", bundle, BARE_ID], check=True, **self.quiet)
        wait_port(self.ip, 8080)
        elapsed = time.perf_counter() - t0
        subprocess.run([*self.runc, "kill", BARE_ID, "KILL"], check=False, **self.quiet)
        while self._status() not in ("stopped", None):
            time.sleep(0.002)
        subprocess.run([*self.runc, "delete", "-f", BARE_ID], check=False, **self.quiet)
        unmount_all(self.mdir / "rootfs")
        return elapsed

    def _status(self) -> str | None:
        out = subprocess.run([*self.runc, "state", BARE_ID], capture_output=True).stdout
        return json.loads(out).get("status") if out else None

    def close(self) -> None:
        subprocess.run([*self.runc, "delete", "-f", BARE_ID], check=False, **self.quiet)
        unmount_all(self.mdir / "rootfs")
        asyncio.run(self._teardown())
        for controller in Path("/sys/fs/cgroup").iterdir():
            leaf = controller / "roost-bench"
            for d in (leaf / BARE_ID, leaf):
                if d.is_dir():
                    d.rmdir()

    async def _teardown(self) -> None:
        await self.nets.delete(BARE_ID)
        await self.host.teardown()


def _ipv4(private_ip: str, server: object) -> str:
    import ipaddress

    v6 = ipaddress.IPv6Address(private_ip)
    index = int(v6) - int(ipaddress.IPv6Network(server.v6_subnet).network_address)  # type: ignore[attr-defined]
    return str(ipaddress.IPv4Network(server.v4_subnet).network_address + index)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    roost: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory(prefix="roost-bench-") as tmpdir:
        tmp = Path(tmpdir)
        routes = [("-4", "172.30.0.0/16"), ("-6", "fdaa::/16")]
        for family, net in routes:
            subprocess.run(["ip", family, "route", "replace", "unreachable", net], check=True)
        registry = LocalRegistry(tmp / "registry", f"127.0.0.1:{free_port()}")
        asyncio.run(registry.start())
        sides: list[RoostSide | BareSide] = []
        try:
            image = asyncio.run(seed_demo_images(registry.addr, tmp / "build"))["roost/hello"]
            sides = [RoostSide(image, tmp / "roost"), BareSide(image, tmp)]
            for side in sides:
                side.one()  # warm-up, not counted
            # Interleaved, so both sides see the same load on a shared machine.
            for _ in range(args.runs):
                roost.append(sides[0].one())
                bare.append(sides[1].one())
        finally:
            for side in sides:
                side.close()
            asyncio.run(registry.stop())
            for family, net in routes:
                subprocess.run(
                    ["ip", family, "route", "del", "unreachable", net], capture_output=True
                )
    print("start of a stopped machine → port accepting (busybox httpd)")
    r50, r95 = report("roost", roost)
    b50, b95 = report("bare", bare)
    print(f"   ratio: p50 {r50 / b50:.2f}x   p95 {r95 / b95:.2f}x   (roost / bare runc)")


if __name__ == "__main__":
    main()
