"""Where a new machine goes: walk the region expression in order, keep hosts that are
alive, not cordoned and have room, and take the best of a small random sample.

Capacity is reserved by the caller in the same store transaction that writes the
machine (compare-and-swap on the host's ``/hostalloc`` key), so two concurrent creates
can never both take the last slot; a lost race simply re-runs placement.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from roost.api.errors import BadRequest, InsufficientCapacity
from roost.store import KV, Store
from roost.store.records import Allocation, HostRecord, hostalloc_key

SAMPLE_SIZE = 3
ANY = "any"


@dataclass(frozen=True, slots=True)
class Candidate:
    host: HostRecord
    allocation: Allocation
    allocation_kv: KV | None

    @property
    def free_memory_mb(self) -> int:
        return self.host.memory_mb - self.allocation.memory_mb


def parse_regions(expression: str | None, default: str) -> list[str]:
    """``"iad,dfw"`` → ``["iad", "dfw"]``; empty → the API's own region, then any."""
    if not expression:
        return [default, ANY]
    regions = [part.strip().lower() for part in expression.split(",") if part.strip()]
    for region in regions:
        if not region.replace("-", "").isalnum():
            raise BadRequest(f"invalid region {region!r} in {expression!r}")
    return regions


class Placement:
    def __init__(self, store: Store, *, rng: random.Random | None = None) -> None:
        self._store = store
        self._rng = rng or random.Random()

    async def candidates(self, regions: list[str], cpus: int, memory_mb: int) -> list[Candidate]:
        """Hosts to try, best first. Raises InsufficientCapacity naming the regions tried."""
        hosts = await self._hosts()
        tried: list[str] = []
        for region in regions:
            tried.append(region)
            pool = [
                c
                for c in hosts
                if (region == ANY or c.host.region == region)
                and c.free_memory_mb >= memory_mb
                and c.host.cpus - c.allocation.cpus >= cpus
            ]
            if pool:
                sample = self._rng.sample(pool, min(SAMPLE_SIZE, len(pool)))
                # Spread: most free memory first, then fewest machines.
                sample.sort(key=lambda c: (-c.free_memory_mb, c.allocation.machines))
                rest = [c for c in pool if c not in sample]
                return sample + rest
        known = sorted({c.host.region for c in hosts})
        raise InsufficientCapacity(
            f"insufficient resources to create a machine with {cpus} cpu(s) and "
            f"{memory_mb} MB in region(s) {', '.join(tried)}"
            + (f"; regions with live hosts: {', '.join(known)}" if known else "; no live hosts")
        )

    async def _hosts(self) -> list[Candidate]:
        hosts = await self._store.range("/hosts/")
        alive = {kv.key.removeprefix("/alive/") for kv in (await self._store.range("/alive/")).kvs}
        out = []
        for kv in hosts.kvs:
            host = HostRecord.from_json(kv.value)
            if host.id not in alive or host.cordoned:
                continue
            alloc_kv = await self._store.get(hostalloc_key(host.id))
            allocation = Allocation.from_json(alloc_kv.value) if alloc_kv else Allocation()
            out.append(Candidate(host, allocation, alloc_kv))
        return out
