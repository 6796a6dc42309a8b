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
from dataclasses import dataclass
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


def bench_roost(server_image: str, tmp: Path, runs: int) -> list[float]:
    server = new_server(tmp)
    server.start()
    try:
        c = server.client()
        c.post("/v1/apps", json={"name": "bench"}).raise_for_status()
        machine = c.post("/v1/apps/bench/machines", json={"config": {"image": server_image}}).json()
        mid = machine["id"]
        base = f"/v1/apps/bench/machines/{mid}"
        c.get(f"{base}/wait", params={"state": "started", "timeout": 30}).raise_for_status()
        ip = _ipv4(machine["private_ip"], server)
        samples = []
        for _ in range(runs + 1):
            c.post(f"{base}/stop").raise_for_status()
            c.get(f"{base}/wait", params={"state": "stopped", "timeout": 30}).raise_for_status()
            t0 = time.perf_counter()
            c.post(f"{base}/start").raise_for_status()
            wait_port(ip, 8080)
            samples.append(time.perf_counter() - t0)
        c.delete(base, params={"force": "true"})
        c.get(f"{base}/wait", params={"state": "destroyed", "timeout": 30})
        return samples[1:]
    finally:
        server.cleanup()


@dataclass
class Bare:
    """A bundle equivalent to a roost machine's, with its netns and image ready."""

    image: Image
    host: HostNetwork
    nets: MachineNetworks
    spec: LaunchSpec
    ip: str


async def prepare_bare(image_ref: str, tmp: Path) -> Bare:
    images = ImageStore(tmp / "images")
    image = await images.pull(image_ref)
    await images.aclose()
    addressing = MachineAddressing("172.30.250.0/24", "fdaa:0:250::/64")
    host = HostNetwork("rstbench", addressing)
    await host.setup()
    nets = MachineNetworks("rstbench", addressing, "rstb-")
    netns = await nets.create(BARE_ID, 2)
    spec = LaunchSpec(
        machine_id=BARE_ID,
        rootfs=image.rootfs,
        process=ProcessSpec(argv=[*image.config.entrypoint, *image.config.cmd], env={}),
        netns=netns,
    )
    return Bare(image, host, nets, spec, str(addressing.address(2).v4))


async def teardown_bare(bare: Bare) -> None:
    await bare.nets.delete(BARE_ID)
    await bare.host.teardown()


def bench_bare(bare: Bare, tmp: Path, runs: int) -> list[float]:
    mdir = tmp / "bare"
    runc = ["runc", "--root", str(tmp / "runc")]
    (mdir / "bundle").mkdir(parents=True)
    (mdir / "hosts").write_text(oci.hosts_file(bare.spec))
    (mdir / "resolv.conf").write_text("")
    config = oci.build_config(
        bare.spec,
        root_path=mdir / "rootfs",
        cgroups_path=f"/roost-bench/{BARE_ID}",
        hosts_path=mdir / "hosts",
        resolv_path=mdir / "resolv.conf",
        nofile=20000,
        init=DEFAULT_INIT if DEFAULT_INIT.exists() else None,
    )
    (mdir / "bundle/config.json").write_text(json.dumps(config))
    quiet: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }
    samples = []
    try:
        for i in range(runs + 1):
            # A fresh writable layer, as roost gives each start; not timed, in bare's favour.
            layer = mdir / f"layer{i}"
            (layer / "upper").mkdir(parents=True)
            (layer / "work").mkdir()
            (mdir / "rootfs").mkdir(exist_ok=True)
            mount_overlay(bare.image.rootfs, layer / "upper", layer / "work", mdir / "rootfs")
            t0 = time.perf_counter()
            bundle = str(mdir / "bundle")
            subprocess.run([*runc, "run", "-d", "-b", bundle, BARE_ID], check=True, **quiet)
            wait_port(bare.ip, 8080)
            samples.append(time.perf_counter() - t0)
            subprocess.run([*runc, "kill", BARE_ID, "KILL"], check=False, **quiet)
            while _runc_status(runc) not in ("stopped", None):
                time.sleep(0.002)
            subprocess.run([*runc, "delete", "-f", BARE_ID], check=False, **quiet)
            unmount_all(mdir / "rootfs")
    finally:
        subprocess.run([*runc, "delete", "-f", BARE_ID], check=False, **quiet)
        unmount_all(mdir / "rootfs")
        for controller in Path("/sys/fs/cgroup").iterdir():
            leaf = controller / "roost-bench"
            for d in (leaf / BARE_ID, leaf):
                if d.is_dir():
                    d.rmdir()
    return samples[1:]


def _runc_status(runc: list[str]) -> str | None:
    out = subprocess.run([*runc, "state", BARE_ID], capture_output=True).stdout
    return json.loads(out).get("status") if out else None


def _ipv4(private_ip: str, server: object) -> str:
    import ipaddress

    v6 = ipaddress.IPv6Address(private_ip)
    index = int(v6) - int(ipaddress.IPv6Network(server.v6_subnet).network_address)  # type: ignore[attr-defined]
    return str(ipaddress.IPv4Network(server.v4_subnet).network_address + index)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="roost-bench-") as tmpdir:
        tmp = Path(tmpdir)
        routes = [("-4", "172.30.0.0/16"), ("-6", "fdaa::/16")]
        for family, net in routes:
            subprocess.run(["ip", family, "route", "replace", "unreachable", net], check=True)
        registry = LocalRegistry(tmp / "registry", f"127.0.0.1:{free_port()}")
        asyncio.run(registry.start())
        try:
            refs = asyncio.run(seed_demo_images(registry.addr, tmp / "build"))
            image = refs["roost/hello"]
            roost = bench_roost(image, tmp / "roost", args.runs)
            setup = asyncio.run(prepare_bare(image, tmp))
            try:
                bare = bench_bare(setup, tmp, args.runs)
            finally:
                asyncio.run(teardown_bare(setup))
        finally:
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
