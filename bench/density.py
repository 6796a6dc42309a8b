"""Density: creates per second, host memory per running machine, list latency at scale.

    sudo .venv/bin/python bench/density.py --machines 64 --clients 8 --records 2000

Three measurements on one real ``roost server`` (the test fixture's, on its own bridge
and subnet):

1. **creates/s**: ``--clients`` threads each create machines (cached demo image, 128 MB)
   and wait for ``started``, ``--machines`` in all; the rate is machines over wall time,
   with p50/p99 of one create-to-started.
2. **host memory per running machine**: the RSS and PSS of every per-machine shim
   process on the host while those machines run (the machines' own processes are not
   counted: they are what the user asked for).
3. **list latency**: ``--records`` machines created with ``skip_launch`` (records only),
   then ``GET /v1/apps/A/machines`` in full and paginated (``limit=1000``), p50/p99 of
   ``--lists`` calls each.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import httpx
from common import median, ms, percentile, platform


def create_and_start(api: httpx.Client, app: str, image: str, count: int) -> list[float]:
    took = []
    for _ in range(count):
        began = time.perf_counter()
        config = {"image": image, "guest": {"cpus": 1, "memory_mb": 128}}
        r = api.post(f"/v1/apps/{app}/machines", json={"config": config})
        r.raise_for_status()
        mid = r.json()["id"]
        api.get(
            f"/v1/apps/{app}/machines/{mid}/wait", params={"state": "started", "timeout": 60}
        ).raise_for_status()
        took.append(time.perf_counter() - began)
    return took


def memory_kb(pids: list[int]) -> tuple[int, int]:
    """(total RSS kB, total PSS kB) of ``pids``."""
    rss = pss = 0
    for pid in pids:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        fields = {line.split(":")[0]: line.split()[1] for line in rollup.splitlines()[1:]}
        rss += int(fields["Rss"])
        pss += int(fields["Pss"])
    return rss, pss


def list_latency(api: httpx.Client, app: str, lists: int, **params: object) -> list[float]:
    took = []
    for _ in range(lists):
        began = time.perf_counter()
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            r = api.get(f"/v1/apps/{app}/machines", params=query)
            r.raise_for_status()
            cursor = r.headers.get("fly-next-cursor")
            if not cursor:
                break
        took.append(time.perf_counter() - began)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--lists", type=int, default=20)
    args = parser.parse_args()
    # Capacity is reserved in full for every machine, records included (as on Fly); the
    # host's advertised size is raised so that placement is not what is measured, and the
    # machine range is a /18 (a /24 holds ~250 machines); no test server uses 172.30.0-63.
    roomy = ["--cpus", "1000000", "--memory", "100000000", "--v4-subnet", "172.30.0.0/18"]
    with platform("roost-bench-density-", roomy) as plat:
        image = plat.demo_images()["roost/hello"]
        api = plat.api
        api.post("/v1/apps", json={"name": "dense"}).raise_for_status()
        # One machine first, so the image is cached and the netns path warm.
        create_and_start(api, "dense", image, 1)
        per_client = [args.machines // args.clients] * args.clients
        results: list[list[float]] = [[] for _ in per_client]

        def client(i: int) -> None:
            with plat.server.client() as own:
                results[i] = create_and_start(own, "dense", image, per_client[i])

        began = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - began
        took = [t for r in results for t in r]
        shim_pids = plat.server.shims()
        shims = len(shim_pids)
        rss, pss = memory_kb(shim_pids)

        api.post("/v1/apps", json={"name": "records"}).raise_for_status()
        config = {"image": image, "guest": {"cpus": 1, "memory_mb": 128}}
        for _ in range(args.records):
            body = {"config": config, "skip_launch": True}
            r = api.post("/v1/apps/records/machines", json=body)
            if r.status_code != 200:
                raise SystemExit(f"creating records: {r.status_code} {r.text}")
        full = list_latency(api, "records", args.lists)
        paged = list_latency(api, "records", args.lists, limit=1000)

    print(f"\ncreates: {len(took)} machines from {args.clients} clients in {wall:.1f} s")
    print(
        f"  {len(took) / wall:.1f} creates/s; create→started p50 {ms(median(took))} ms, "
        f"p99 {ms(percentile(took, 0.99))} ms"
    )
    if shims:
        print(
            f"host memory per running machine: {shims} shims, RSS {rss / shims / 1024:.1f} MB, "
            f"PSS {pss / shims / 1024:.1f} MB"
        )
    print(
        f"list {args.records} records: full p50 {ms(median(full))} ms, "
        f"p99 {ms(percentile(full, 0.99))} ms; paginated (1000) p50 {ms(median(paged))} ms, "
        f"p99 {ms(percentile(paged, 0.99))} ms"
    )


if __name__ == "__main__":
    main()
