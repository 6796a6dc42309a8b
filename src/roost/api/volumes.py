"""Volumes through the API: each call is one compare-and-swap store transaction.

As with machines, the API only records intent and the volume's host carries it out
(``roost.agent.volumes``): a new volume is written ``creating`` with its disk reserved
on the chosen host in the same transaction; an extend writes the bigger size and
reserves the difference; a destroy writes ``destroying``; a snapshot is asked for by
writing a ``pending`` snapshot record on the volume's host. The agent gives the disk
back in the write that deletes the record. States: ``roost.volumes.states``.

Attaching is part of the machine's own transaction (``attachment`` below, used by
``roost.api.machines``): a machine that mounts a volume is placed on the volume's host
and the volume names the machine in the same write, so no two machines ever hold one
volume. The agent detaches it when it releases the destroyed machine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roost.api import settle
from roost.api.errors import (
    AppNotFound,
    BadRequest,
    Conflict,
    InsufficientCapacity,
    NotFound,
    PreconditionFailed,
    VolumeNotFound,
)
from roost.api.placement import Placement
from roost.api.schemas import CreateVolumeRequest, ExtendVolumeRequest, UpdateVolumeRequest
from roost.api.views import rfc3339_ms, snapshot_view, volume_view
from roost.cluster import alive_hosts
from roost.spec import ids
from roost.spec.config import MachineConfig
from roost.spec.regions import region_names
from roost.store import KV, Compare, Put, Store
from roost.store.records import (
    SNAPSHOTS_PREFIX,
    Allocation,
    HostRecord,
    MachineRecord,
    SnapshotRecord,
    VolumeRecord,
    app_key,
    host_key,
    hostalloc_key,
    machine_key,
    snapshot_key,
    snapshots_prefix,
    volume_key,
    volumes_prefix,
)
from roost.volumes.states import ATTACHABLE, volume_can, volume_transition

CAS_ATTEMPTS = 50
DEFAULT_SIZE_GB = 3
DEFAULT_RETENTION_DAYS = 5
GIB = 1 << 30
FSTYPE = "ext4"


@dataclass(frozen=True, slots=True)
class Attachment:
    """The volume a machine's config mounts, as read for the machine's transaction."""

    volume: VolumeRecord
    kv: KV

    def ops(self, machine_id: str) -> tuple[Compare, Put]:
        """Compare and put that attach the volume to ``machine_id`` in the same write."""
        key = volume_key(self.volume.app, self.volume.id)
        attached = dataclasses.replace(self.volume, attached_machine_id=machine_id)
        unchanged = Compare(key, "mod_revision", "==", self.kv.mod_revision)
        return unchanged, Put(key, attached.to_json())


async def attachment(
    store: Store, app: str, config: MachineConfig, machine_id: str | None
) -> Attachment | None:
    """The volume ``config`` mounts, checked: one per machine, the app's own, in a state
    that can be mounted, and not held by a machine other than ``machine_id``."""
    mounts = config.mounts or []
    if not mounts:
        return None
    if len(mounts) > 1:
        raise BadRequest("config.mounts: a machine mounts at most one volume")
    volume_id = mounts[0].volume
    if not volume_id:
        raise BadRequest(
            "config.mounts[0].volume is required: create a volume "
            "(`roost volumes create NAME --region R`) and give its id"
        )
    if not ids.is_volume_id(volume_id):
        raise BadRequest(
            f"config.mounts[0].volume: {volume_id!r} is not a volume id "
            "(vol_ and 16 lowercase letters or digits)"
        )
    kv = await store.get(volume_key(app, volume_id))
    if kv is None:
        raise BadRequest(
            f"config.mounts[0].volume: volume {volume_id} is not in app {app!r}; "
            "a machine mounts only its own app's volumes (`roost volumes list`)"
        )
    volume = VolumeRecord.from_json(kv.value)
    if volume.state not in ATTACHABLE:
        raise PreconditionFailed(
            f"failed_precondition: volume {volume_id} is {volume.state} and cannot be mounted"
        )
    holder = volume.attached_machine_id
    if holder and holder != machine_id:
        raise PreconditionFailed(
            f"failed_precondition: volume {volume_id} is attached to machine {holder}; a "
            "volume belongs to one machine at a time: destroy that machine first, or fork "
            f"the volume (`roost volumes fork {volume_id}`)"
        )
    return Attachment(volume, kv)


def mounted_volumes(config: dict[str, Any]) -> list[str]:
    """The volume ids a stored machine config mounts."""
    return [m.get("volume") or "" for m in config.get("mounts") or []]


@dataclass(slots=True)
class _Loaded:
    volume: VolumeRecord
    kv: KV


class Volumes:
    def __init__(
        self,
        store: Store,
        placement: Placement,
        *,
        region: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._placement = placement
        self._region = region
        self._clock = clock

    # -- create ---------------------------------------------------------------------------

    async def create(self, app: str, req: CreateVolumeRequest) -> dict[str, Any]:
        await self._require_app(app)
        if not ids.is_volume_name(req.name):
            raise BadRequest(
                f"invalid volume name {req.name!r}: use up to 30 lowercase letters, digits "
                "and underscores"
            )
        if req.fstype not in (None, FSTYPE):
            raise BadRequest(f"invalid fstype {req.fstype!r}: volumes are {FSTYPE}")
        if req.snapshot_id and req.source_volume_id:
            raise BadRequest("give snapshot_id or source_volume_id, not both")
        for _ in range(CAS_ATTEMPTS):
            source: _Loaded | None = None
            snapshot: SnapshotRecord | None = None
            if req.source_volume_id:
                source = await self._forkable(app, req.source_volume_id)
            if req.snapshot_id:
                snapshot = await self._restorable(app, req.snapshot_id)
            region = self._volume_region(req.region, source.volume.region if source else None)
            size_gb = self._size(req.size_gb, snapshot, source)
            now = self._clock()
            candidate = await self._placement.new_volume_host(
                region, size_gb, same_name=await self._same_name(app, req.name)
            )
            volume = VolumeRecord(
                id=ids.volume_id(),
                name=req.name,
                app=app,
                region=candidate.host.region,
                host_id=candidate.host.id,
                size_gb=size_gb,
                zone=candidate.host.id,
                snapshot_retention=req.snapshot_retention or DEFAULT_RETENTION_DAYS,
                snapshot_id=snapshot.id if snapshot else "",
                created_at=rfc3339_ms(now),
            )
            allocation = dataclasses.replace(
                candidate.allocation, disk_gb=candidate.allocation.disk_gb + size_gb
            )
            key = volume_key(app, volume.id)
            compares = [
                Compare(app_key(app), "create_revision", ">", 0),
                Compare.absent(key),
                Compare.unchanged(candidate.allocation_kv, hostalloc_key(candidate.host.id)),
            ]
            puts = [Put(hostalloc_key(candidate.host.id), allocation.to_json())]
            if source is not None:
                # A fork is a snapshot of the source, restored into the new volume.
                fork = self._new_snapshot(source.volume, now)
                volume.snapshot_id = fork.id
                compares.append(Compare.unchanged(source.kv, volume_key(app, source.volume.id)))
                puts.append(Put(snapshot_key(source.volume.id, fork.id), fork.to_json()))
            puts.append(Put(key, volume.to_json()))
            if (await self._store.txn(compares, puts)).succeeded:
                return volume_view(volume)
            await self._require_app(app)
        raise Conflict("too many concurrent changes while creating the volume; retry")

    def _volume_region(self, requested: str | None, source_region: str | None) -> str:
        region = (requested or source_region or self._region).strip().lower()
        if region_names(region) != {region} or not region.replace("-", "").isalnum():
            raise BadRequest(
                f"invalid region {region!r}: a volume lives in one region; name it "
                "(e.g. region=ams)"
            )
        return region

    def _size(
        self, requested: int | None, snapshot: SnapshotRecord | None, source: _Loaded | None
    ) -> int:
        needed = 1
        if snapshot is not None:
            needed = -(-snapshot.volume_size // GIB)
        elif source is not None:
            needed = source.volume.size_gb
        if requested is None:
            return needed if snapshot or source else DEFAULT_SIZE_GB
        if requested < needed:
            raise BadRequest(
                f"size_gb {requested} is smaller than the {needed} GB being restored; "
                f"ask for {needed} or more"
            )
        return requested

    async def _same_name(self, app: str, name: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for kv in (await self._store.range(volumes_prefix(app))).kvs:
            volume = VolumeRecord.from_json(kv.value)
            if volume.name == name:
                counts[volume.host_id] = counts.get(volume.host_id, 0) + 1
        return counts

    async def _forkable(self, app: str, volume_id: str) -> _Loaded:
        try:
            source = await self._load(app, volume_id)
        except VolumeNotFound:
            raise NotFound(f"source volume {volume_id} not found in app {app!r}") from None
        if source.volume.state not in ATTACHABLE:
            raise PreconditionFailed(
                f"failed_precondition: volume {volume_id} is {source.volume.state}; "
                "only a live volume can be forked"
            )
        return source

    async def _restorable(self, app: str, snapshot_id: str) -> SnapshotRecord:
        snapshot = await self._find_snapshot(app, snapshot_id)
        if snapshot.status == "failed":
            raise PreconditionFailed(
                f"failed_precondition: snapshot {snapshot_id} failed ({snapshot.error}); "
                "restore another one"
            )
        return snapshot

    async def _find_snapshot(self, app: str, snapshot_id: str) -> SnapshotRecord:
        if ids.is_snapshot_id(snapshot_id):
            for kv in (await self._store.range(SNAPSHOTS_PREFIX)).kvs:
                if kv.key.endswith(f"/{snapshot_id}"):
                    snapshot = SnapshotRecord.from_json(kv.value)
                    if snapshot.app == app:
                        return snapshot
        raise NotFound(
            f"snapshot {snapshot_id} not found in app {app!r}; "
            "`roost volumes snapshots list VOLUME` shows a volume's snapshots"
        )

    # -- read -----------------------------------------------------------------------------

    async def list(self, app: str, *, summary: bool = False) -> list[dict[str, Any]]:
        await self._require_app(app)
        alive = await alive_hosts(self._store)
        out = []
        for kv in (await self._store.range(volumes_prefix(app))).kvs:
            volume = VolumeRecord.from_json(kv.value)
            status = _host_status(volume, alive)
            out.append(volume_view(volume, host_status=status, summary=summary))
        return out

    async def get(self, app: str, volume_id: str) -> dict[str, Any]:
        loaded = await self._load(app, volume_id)
        return volume_view(
            loaded.volume, host_status=_host_status(loaded.volume, await alive_hosts(self._store))
        )

    async def count(self, app: str) -> int:
        kvs = (await self._store.range(volumes_prefix(app))).kvs
        return sum(1 for kv in kvs if VolumeRecord.from_json(kv.value).state != "destroying")

    # -- changes ----------------------------------------------------------------------------

    async def update(self, app: str, volume_id: str, req: UpdateVolumeRequest) -> dict[str, Any]:
        def change(volume: VolumeRecord) -> VolumeRecord:
            retention = req.snapshot_retention or volume.snapshot_retention
            return dataclasses.replace(volume, snapshot_retention=retention)

        return volume_view(await self._mutate(app, volume_id, change))

    async def extend(self, app: str, volume_id: str, req: ExtendVolumeRequest) -> dict[str, Any]:
        until = settle.deadline()
        for _ in range(CAS_ATTEMPTS):
            loaded = await self._load(app, volume_id)
            volume = loaded.volume
            if req.size_gb <= volume.size_gb:
                raise BadRequest(
                    f"volume {volume_id} is {volume.size_gb} GB and volumes only grow; "
                    f"ask for more than {volume.size_gb}"
                )
            if not volume_can(volume.state, "extend"):
                refused = PreconditionFailed(
                    f"failed_precondition: volume {volume_id} is {volume.state}; "
                    "extend it once it is created"
                )
                # A volume still being made is extended once it is: wait that out.
                if volume.state != "creating" or not await settle.next_change(
                    self._store,
                    loaded.kv.key,
                    loaded.kv.mod_revision,
                    until,
                    host_id=volume.host_id,
                ):
                    raise refused
                continue
            more = req.size_gb - volume.size_gb
            alloc_key = hostalloc_key(volume.host_id)
            alloc_kv = await self._store.get(alloc_key)
            allocation = Allocation.from_json(alloc_kv.value) if alloc_kv else Allocation()
            host_kv = await self._store.get(host_key(volume.host_id))
            host = HostRecord.from_json(host_kv.value) if host_kv else None
            free = (host.disk_gb if host else 0) - allocation.disk_gb
            if free < more:
                raise InsufficientCapacity(
                    f"insufficient capacity: volume {volume_id} is on host {volume.host_id} "
                    f"(region {volume.region}), which has {max(free, 0)} GB free, not {more}; "
                    "fork it onto another host with a bigger size "
                    f"(`roost volumes fork {volume_id} --size {req.size_gb}`)"
                )
            grown = dataclasses.replace(
                volume, size_gb=req.size_gb, state=volume_transition(volume.state, "extend")
            )
            allocation = dataclasses.replace(allocation, disk_gb=allocation.disk_gb + more)
            result = await self._store.txn(
                [
                    Compare(loaded.kv.key, "mod_revision", "==", loaded.kv.mod_revision),
                    Compare.unchanged(alloc_kv, alloc_key),
                ],
                [Put(loaded.kv.key, grown.to_json()), Put(alloc_key, allocation.to_json())],
            )
            if result.succeeded:
                # Where mounted filesystems cannot grow, a machine using the volume sees
                # the new size from its next start.
                online = host is not None and host.online_resize
                needs_restart = bool(volume.attached_machine_id) and not online
                return {"needs_restart": needs_restart, "volume": volume_view(grown)}
        raise Conflict("too many concurrent changes to the volume; retry")

    async def destroy(self, app: str, volume_id: str) -> dict[str, Any]:
        for _ in range(CAS_ATTEMPTS):
            loaded = await self._load(app, volume_id)
            volume = loaded.volume
            if volume.state == "destroying":
                return volume_view(volume)
            holder_kv = None
            if volume.attached_machine_id:
                holder_kv = await self._store.get(machine_key(app, volume.attached_machine_id))
                holder = MachineRecord.from_json(holder_kv.value) if holder_kv else None
                if holder is not None and holder.desired != "destroyed":
                    raise PreconditionFailed(
                        f"failed_precondition: volume {volume_id} is attached to machine "
                        f"{holder.id}; destroy the machine first"
                    )
            doomed = dataclasses.replace(volume, state=volume_transition(volume.state, "destroy"))
            key = loaded.kv.key
            compares = [Compare(key, "mod_revision", "==", loaded.kv.mod_revision)]
            if volume.attached_machine_id:
                holder_key = machine_key(app, volume.attached_machine_id)
                compares.append(Compare.unchanged(holder_kv, holder_key))
            if (await self._store.txn(compares, [Put(key, doomed.to_json())])).succeeded:
                return volume_view(doomed)
        raise Conflict("too many concurrent changes to the volume; retry")

    async def destroy_all(self, app: str) -> None:
        """Every volume of an app being deleted (its machines are being destroyed too; the
        agents remove each volume once its machine has let go of it)."""
        for kv in (await self._store.range(volumes_prefix(app))).kvs:
            volume = VolumeRecord.from_json(kv.value)
            if volume_can(volume.state, "destroy") and volume.state != "destroying":
                doomed = dataclasses.replace(volume, state="destroying")
                unchanged = [Compare(kv.key, "mod_revision", "==", kv.mod_revision)]
                await self._store.txn(unchanged, [Put(kv.key, doomed.to_json())])

    # -- snapshots ------------------------------------------------------------------------

    async def snapshots(self, app: str, volume_id: str) -> list[dict[str, Any]]:
        """A volume's snapshots, oldest first; they outlive the volume (its retention)."""
        if not _valid(volume_id):
            await self._load(app, volume_id)  # raises the right not-found
        kvs = (await self._store.range(snapshots_prefix(volume_id))).kvs
        found = [s for kv in kvs if (s := SnapshotRecord.from_json(kv.value)).app == app]
        if not found:
            await self._load(app, volume_id)
        return [snapshot_view(s) for s in sorted(found, key=lambda s: (s.created_at, s.id))]

    async def create_snapshot(self, app: str, volume_id: str) -> dict[str, Any]:
        for _ in range(CAS_ATTEMPTS):
            loaded = await self._load(app, volume_id)
            volume = loaded.volume
            if volume.state not in ATTACHABLE:
                raise PreconditionFailed(
                    f"failed_precondition: volume {volume_id} is {volume.state}; "
                    "only a live volume can be snapshotted"
                )
            snapshot = self._new_snapshot(volume, self._clock())
            result = await self._store.txn(
                [Compare(loaded.kv.key, "mod_revision", "==", loaded.kv.mod_revision)],
                [Put(snapshot_key(volume_id, snapshot.id), snapshot.to_json())],
            )
            if result.succeeded:
                return snapshot_view(snapshot)
        raise Conflict("too many concurrent changes to the volume; retry")

    def _new_snapshot(self, volume: VolumeRecord, now: float) -> SnapshotRecord:
        return SnapshotRecord(
            id=ids.snapshot_id(),
            volume_id=volume.id,
            app=volume.app,
            host_id=volume.host_id,
            volume_size=volume.size_gb * GIB,
            retention_days=volume.snapshot_retention,
            created_at=rfc3339_ms(now),
        )

    # -- helpers ----------------------------------------------------------------------------

    async def _mutate(
        self, app: str, volume_id: str, change: Callable[[VolumeRecord], VolumeRecord]
    ) -> VolumeRecord:
        for _ in range(CAS_ATTEMPTS):
            loaded = await self._load(app, volume_id)
            new = change(loaded.volume)
            compare = [Compare(loaded.kv.key, "mod_revision", "==", loaded.kv.mod_revision)]
            if (await self._store.txn(compare, [Put(loaded.kv.key, new.to_json())])).succeeded:
                return new
        raise Conflict("too many concurrent changes to the volume; retry")

    async def _load(self, app: str, volume_id: str) -> _Loaded:
        kv = await self._store.get(volume_key(app, volume_id)) if _valid(volume_id) else None
        if kv is None:
            await self._require_app(app)
            raise VolumeNotFound(volume_id)
        return _Loaded(VolumeRecord.from_json(kv.value), kv)

    async def _require_app(self, app: str) -> None:
        if await self._store.get(app_key(app)) is None:
            raise AppNotFound(app)


def _valid(volume_id: str) -> bool:
    return ids.is_volume_id(volume_id)


def _host_status(volume: VolumeRecord, alive: dict[str, int]) -> str:
    return "ok" if volume.host_id in alive else "unreachable"
