"""Where a new machine goes: walk the region expression in order, keep hosts that are
alive, not cordoned and have room, and order them so an app's machines spread: hosts
with the fewest machines of this app first, then the most free memory, then at random.

Which hosts a region name means (:class:`RegionMap`): a host serves its own region, its
aliases, and Fly's groups (``eu``, ``us``, ...) of those. When every host shares one
region (a one-host install, or one site), Fly's codes and groups all mean that region:
clients written for Fly send ``iad`` or ``lhr`` and expect a machine, and the machine's
``region`` then says where it really runs. With several regions, a name no host serves
gets 412 naming the regions there are.

A machine that mounts a volume has no choice: it goes on the volume's host or nowhere.
A new volume goes to one region (no expressions: it stays there), on the host with room
that holds the fewest volumes of the same name (Fly's unique zones, as a preference),
then the most free disk.

Capacity is reserved by the caller in the same store transaction that writes the
machine (compare-and-swap on the host's ``/hostalloc`` key), so two concurrent creates
can never both take the last slot; a lost race simply re-runs placement.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass

from roost.api.errors import BadRequest, InsufficientCapacity, VolumeHostFull
from roost.cluster import alive_hosts
from roost.spec.config import MachineGuest
from roost.spec.regions import ANY, is_fly_name, region_names
from roost.store import KV, Store
from roost.store.records import (
    HOSTS_PREFIX,
    Allocation,
    HostRecord,
    MachineRecord,
    VolumeRecord,
    alive_key,
    host_key,
    hostalloc_key,
    machines_prefix,
)


@dataclass(frozen=True, slots=True)
class Candidate:
    host: HostRecord
    allocation: Allocation
    allocation_kv: KV | None

    @property
    def free_memory_mb(self) -> int:
        return self.host.memory_mb - self.allocation.memory_mb

    @property
    def free_disk_gb(self) -> int:
        return self.host.disk_gb - self.allocation.disk_gb

    def fits(self, guest: MachineGuest) -> bool:
        return (
            self.free_memory_mb >= guest.memory_mb
            and self.host.cpus - self.allocation.cpus >= guest.cpu_slots
        )


@dataclass(frozen=True, slots=True)
class RegionMap:
    """The region names each host answers to."""

    regions: dict[str, str]
    """Host id → its region."""
    aliases: dict[str, frozenset[str]]
    """Host id → the other names it answers to."""
    single_region: bool
    """Every host shares one region: Fly's names all mean it."""

    @classmethod
    def of(cls, hosts: Collection[HostRecord]) -> RegionMap:
        regions = {h.id: h.region for h in hosts}
        aliases = {h.id: frozenset(h.region_aliases) for h in hosts}
        return cls(regions, aliases, len(set(regions.values())) <= 1)

    def serves(self, host_id: str, token: str) -> bool:
        names = self.aliases.get(host_id, frozenset()) | {self.regions.get(host_id, "")}
        if token == ANY or token in names:
            return True
        if self.single_region and is_fly_name(token):
            return True
        wanted = region_names(token)
        return wanted is not None and bool(names & wanted)

    def describe(self) -> str:
        """The regions there are, for error messages: ``ams (also iad), fra``."""
        named: dict[str, set[str]] = {}
        for host_id, region in self.regions.items():
            named.setdefault(region, set()).update(self.aliases.get(host_id, ()))
        return ", ".join(
            f"{region} (also {', '.join(sorted(aliases))})" if aliases else region
            for region, aliases in sorted(named.items())
        )


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

    async def candidates(
        self, regions: list[str], guest: MachineGuest, *, app: str = ""
    ) -> list[Candidate]:
        """Hosts to try, best first. Raises InsufficientCapacity naming the regions tried."""
        hosts, names = await self._hosts()
        mine = await self._app_machines(app) if app else {}
        tried: list[str] = []
        for region in regions:
            tried.append(region)
            pool = [c for c in hosts if names.serves(c.host.id, region) and c.fits(guest)]
            if pool:
                ties = {c.host.id: self._rng.random() for c in pool}
                return sorted(
                    pool,
                    key=lambda c: (mine.get(c.host.id, 0), -c.free_memory_mb, ties[c.host.id]),
                )
        live = RegionMap.of([c.host for c in hosts]).describe()
        raise InsufficientCapacity(
            f"insufficient resources to create a machine with {_size(guest)} "
            f"in region(s) {', '.join(tried)}"
            + (f"; regions with live hosts: {live}" if live else "; no live hosts")
        )

    async def serves(self, host_id: str, regions: list[str]) -> bool:
        """Whether ``host_id`` answers to any of ``regions``."""
        names = await self.region_map()
        return any(names.serves(host_id, region) for region in regions)

    async def region_map(self) -> RegionMap:
        kvs = (await self._store.range(HOSTS_PREFIX)).kvs
        return RegionMap.of([HostRecord.from_json(kv.value) for kv in kvs])

    async def volume_host(self, volume: VolumeRecord, guest: MachineGuest) -> Candidate:
        """The volume's host, if a machine of this size may start there now."""
        kv = await self._store.get(host_key(volume.host_id))
        alive = await self._store.get(alive_key(volume.host_id)) is not None
        why = ""
        if kv is None or not alive:
            why = "is down"
        else:
            host = HostRecord.from_json(kv.value)
            alloc_kv = await self._store.get(hostalloc_key(host.id))
            allocation = Allocation.from_json(alloc_kv.value) if alloc_kv else Allocation()
            candidate = Candidate(host, allocation, alloc_kv)
            if host.cordoned:
                why = "is cordoned"
            elif not candidate.fits(guest):
                why = f"has no room for {_size(guest)}"
            else:
                return candidate
        raise VolumeHostFull(
            "insufficient resources to create new machine with existing volume: volume "
            f"{volume.id} is on host {volume.host_id} (region {volume.region}), which {why}; "
            f"fork it onto another host (`roost volumes fork {volume.id}`) and mount the fork"
        )

    async def new_volume_host(
        self, region: str, size_gb: int, *, same_name: dict[str, int]
    ) -> Candidate:
        """The host for a new volume in ``region``; ``same_name`` counts, per host, the
        app's volumes with the new one's name."""
        hosts, names = await self._hosts()
        pool = [c for c in hosts if names.serves(c.host.id, region) and c.free_disk_gb >= size_gb]
        if not pool:
            known = RegionMap.of([c.host for c in hosts if c.host.disk_gb]).describe()
            raise InsufficientCapacity(
                f"insufficient capacity: no live host in region {region} has {size_gb} GB "
                "free for a volume" + (f"; regions that keep volumes: {known}" if known else "")
            )
        ties = {c.host.id: self._rng.random() for c in pool}
        return min(
            pool,
            key=lambda c: (same_name.get(c.host.id, 0), -c.free_disk_gb, ties[c.host.id]),
        )

    async def _hosts(self) -> tuple[list[Candidate], RegionMap]:
        """The live, uncordoned hosts; and the region names of every host there is, so a
        host going down never changes what a name means."""
        records = [
            HostRecord.from_json(kv.value) for kv in (await self._store.range(HOSTS_PREFIX)).kvs
        ]
        alive = await alive_hosts(self._store)
        out = []
        for host in records:
            if host.id not in alive or host.cordoned:
                continue
            alloc_kv = await self._store.get(hostalloc_key(host.id))
            allocation = Allocation.from_json(alloc_kv.value) if alloc_kv else Allocation()
            out.append(Candidate(host, allocation, alloc_kv))
        return out, RegionMap.of(records)

    async def _app_machines(self, app: str) -> dict[str, int]:
        """Machines of ``app`` per host, destroyed ones aside."""
        counts: dict[str, int] = {}
        for kv in (await self._store.range(machines_prefix(app))).kvs:
            record = MachineRecord.from_json(kv.value)
            if record.desired != "destroyed":
                counts[record.host_id] = counts.get(record.host_id, 0) + 1
        return counts


def _size(guest: MachineGuest) -> str:
    return f"{guest.cpus} {guest.cpu_kind} cpu(s) and {guest.memory_mb} MB"
