"""This host's volumes: the agent makes, mounts, grows, snapshots and removes them as the
store says.

The API records intent under ``/volumes`` and ``/volsnaps`` (``roost.api.volumes``).
The agent follows both prefixes (list at R, watch from R + 1, list again on error) and
after every change makes one *pass* over the volumes and snapshots placed on this host,
doing what each one's state asks (``roost.volumes.states``), one at a time:

    snapshot pending         → copy the image, its filesystem frozen → created | failed
    volume creating          → mkfs, or restore its snapshot (copied when it is on this
                               host, else streamed from its host's agent) → mount → created
    volume created           → mounted (again, after an agent restart)
    volume extending         → grow the image and the filesystem → created; where mounted
                               filesystems cannot grow and a machine runs on the volume,
                               the filesystem grows just before that machine next starts
    volume destroying        → once no machine holds it: unmount and delete the image; the
                               record goes and its disk is given back in one write
    snapshot past retention  → its file and record go

Each step is idempotent and re-derived from the store, so a pass cut short by a crash is
simply made again. What a pass could not finish for a passing reason (a snapshot's host
unreachable) is noted on the volume (``error``) and tried again after a delay; what can
never work (a snapshot that failed) fails the volume. A pass runs its steps in turn, so a
long restore delays this host's other volume work (never its machines' other work).

A machine gets its volume through ``held``: the volume's mount, with the volume's own
changes kept waiting until the machine has started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import httpx

from roost.agent.endpoint import PREFIX
from roost.api.views import rfc3339_ms
from roost.cluster import HEADER, cluster_secret
from roost.store import KV, Compacted, Compare, Delete, Put, Store
from roost.store.records import (
    SNAPSHOTS_PREFIX,
    VOLUMES_PREFIX,
    Allocation,
    HostRecord,
    SnapshotRecord,
    VolumeRecord,
    alive_key,
    host_key,
    hostalloc_key,
    machine_key,
)
from roost.volumes.images import GIB, FsUsage, SnapshotFile, VolumeError
from roost.volumes.states import (
    READABLE,
    SnapshotInput,
    VolumeInput,
    snapshot_transition,
    volume_transition,
)

log = logging.getLogger("roost.agent")

RETRY_DELAY = 5.0
"""How soon a pass that left something unfinished runs again."""
SWEEP_INTERVAL = 3600.0
"""How often a pass runs with nothing changed (snapshots expire by the day)."""
MOUNT_WAIT = 120.0
"""How long a machine's start waits for its volume to be made."""
FETCH_CONNECT_TIMEOUT = 5.0
FETCH_READ_TIMEOUT = 60.0


class VolumeStore(Protocol):
    """Volume images on this host (``roost.volumes.images.LoopVolumes``)."""

    def exists(self, volume_id: str) -> bool: ...

    def known(self) -> list[str]: ...

    def known_snapshots(self) -> list[str]: ...

    def usage(self, volume_id: str) -> FsUsage | None: ...

    async def create(self, volume_id: str, size_gb: int) -> None: ...

    async def restore(self, volume_id: str, snapshot_id: str, size_gb: int) -> None: ...

    async def receive(
        self, volume_id: str, stream: AsyncIterator[bytes], digest: str, size_gb: int
    ) -> None: ...

    async def mount(self, volume_id: str) -> Path: ...

    async def extend(self, volume_id: str, size_gb: int, *, offline: bool) -> bool: ...

    async def snapshot(self, volume_id: str, snapshot_id: str) -> SnapshotFile: ...

    async def remove(self, volume_id: str) -> None: ...

    async def remove_snapshot(self, snapshot_id: str) -> None: ...


class SnapshotSource(Protocol):
    """Snapshots kept on other hosts."""

    def open(self, snapshot: SnapshotRecord) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The snapshot's stream (``roost.volumes.sparse``); raises FetchFailed."""


class FetchFailed(Exception):
    """Another host's snapshot cannot be had now (its host down, the link broken)."""


class VolumeUnavailable(Exception):
    """A machine's volume cannot be mounted; the message says why."""


@dataclass(frozen=True, slots=True)
class _Entry:
    volume: VolumeRecord
    kv: KV


class VolumeAgent:
    def __init__(
        self,
        store: Store,
        host: HostRecord,
        files: VolumeStore,
        *,
        running: Callable[[str], Awaitable[bool]],
        source: SnapshotSource | None = None,
        clock: Callable[[], float] = time.time,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        """``running(machine_id)``: whether that machine's process runs on this host."""
        self._store = store
        self._host = host
        self._files = files
        self._running = running
        self._source = source
        self._clock = clock
        self._retry_delay = retry_delay
        self._mounted: dict[str, Path] = {}
        self._failed: dict[str, str] = {}
        self._pending_growth: dict[str, int] = {}
        """Volumes whose filesystem grows at their machine's next start: the new size."""
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._reaped = False

    # -- following the store ----------------------------------------------------------------

    async def run(self) -> None:
        """Follow the store and keep this host's volumes as it says, until cancelled."""
        followers = [
            asyncio.create_task(self._follow(prefix), name=f"agent-follow-{prefix}")
            for prefix in (VOLUMES_PREFIX, SNAPSHOTS_PREFIX)
        ]
        try:
            while True:
                self._wake.clear()
                try:
                    again = await self.reconcile()
                except Exception:
                    log.exception("volumes: a pass failed; trying again")
                    again = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._retry_delay if again else SWEEP_INTERVAL):
                        await self._wake.wait()
        finally:
            for follower in followers:
                follower.cancel()
            await asyncio.gather(*followers, return_exceptions=True)

    async def _follow(self, prefix: str) -> None:
        while True:
            try:
                listing = await self._store.range(prefix, limit=1)
                # Whatever changed before the watch begins is in the next pass's listing.
                self._wake.set()
                async for _ in self._store.watch(prefix, listing.revision + 1):
                    self._wake.set()
            except Compacted:
                continue
            except Exception:
                log.exception("volumes: watching %s failed; listing again", prefix)
                await asyncio.sleep(self._retry_delay)

    # -- one pass ---------------------------------------------------------------------------

    async def reconcile(self) -> bool:
        """One pass over this host's volumes and snapshots; True if something is left to
        try again later."""
        mine: dict[str, _Entry] = {}
        for kv in (await self._store.range(VOLUMES_PREFIX)).kvs:
            volume = VolumeRecord.from_json(kv.value)
            if volume.host_id == self._host.id:
                mine[volume.id] = _Entry(volume, kv)
        snapshots = [
            (SnapshotRecord.from_json(kv.value), kv)
            for kv in (await self._store.range(SNAPSHOTS_PREFIX)).kvs
        ]
        again = False
        for snapshot, kv in snapshots:
            if snapshot.host_id == self._host.id and snapshot.status == "pending":
                again |= await self._attempt(
                    snapshot.volume_id, self._take(snapshot, kv, mine.get(snapshot.volume_id))
                )
        by_id = {snapshot.id: snapshot for snapshot, _ in snapshots}
        for entry in mine.values():
            again |= await self._attempt(entry.volume.id, self._step(entry, by_id))
        await self._expire(snapshots)
        if not self._reaped:
            await self._reap(mine, snapshots)
            self._reaped = True
        return again

    async def _attempt(self, volume_id: str, step: Awaitable[bool]) -> bool:
        try:
            async with self._locks[volume_id]:
                return await step
        except Exception:
            log.exception("volume %s: not done yet; trying again", volume_id)
            return True

    async def _step(self, entry: _Entry, snapshots: dict[str, SnapshotRecord]) -> bool:
        state = entry.volume.state
        if state == "creating":
            return await self._make(entry, snapshots)
        if state == "created":
            if entry.volume.id not in self._mounted:
                await self._mount(entry.volume.id)
            return False
        if state == "extending":
            return await self._grow(entry)
        if state == "destroying":
            return await self._remove(entry)
        if state == "failed":
            await self._set_failed(entry.volume.id, entry.volume.error)
        return False

    # -- creating ---------------------------------------------------------------------------

    async def _make(self, entry: _Entry, snapshots: dict[str, SnapshotRecord]) -> bool:
        volume = entry.volume
        try:
            if not self._files.exists(volume.id):
                if volume.snapshot_id:
                    snapshot = snapshots.get(volume.snapshot_id)
                    if snapshot is None or snapshot.status == "failed":
                        why = "is gone" if snapshot is None else f"failed: {snapshot.error}"
                        raise VolumeError(f"snapshot {volume.snapshot_id} {why}")
                    if snapshot.status == "pending":
                        return False  # its snapshot being taken wakes us
                    await self._restore(volume, snapshot)
                else:
                    await self._files.create(volume.id, volume.size_gb)
            path = await self._files.mount(volume.id)
        except FetchFailed as exc:
            return await self._note(entry, str(exc))
        except VolumeError as exc:
            if await self._write(entry, "error", error=str(exc)):
                await self._set_failed(volume.id, str(exc))
            return False
        if await self._write(entry, "made"):
            await self._set_mounted(volume.id, path)
        return False

    async def _restore(self, volume: VolumeRecord, snapshot: SnapshotRecord) -> None:
        if snapshot.host_id == self._host.id:
            await self._files.restore(volume.id, snapshot.id, volume.size_gb)
            return
        if self._source is None:
            raise VolumeError(f"this host cannot fetch snapshots from host {snapshot.host_id}")
        async with self._source.open(snapshot) as stream:
            await self._files.receive(volume.id, stream, snapshot.digest, volume.size_gb)

    # -- live volumes -------------------------------------------------------------------------

    async def _mount(self, volume_id: str) -> Path:
        path = await self._files.mount(volume_id)
        await self._set_mounted(volume_id, path)
        return path

    async def _grow(self, entry: _Entry) -> bool:
        volume = entry.volume
        holder = volume.attached_machine_id
        in_use = holder is not None and await self._running(holder)
        if in_use and self._pending_growth.get(volume.id) == volume.size_gb:
            return False  # still waiting for its machine's next start
        await self._mount(volume.id)
        try:
            grown = await self._files.extend(volume.id, volume.size_gb, offline=not in_use)
        except VolumeError as exc:
            return await self._note(entry, str(exc))
        if not grown:
            self._pending_growth[volume.id] = volume.size_gb
            return False
        self._pending_growth.pop(volume.id, None)
        await self._write(entry, "grown")
        return False

    @contextlib.asynccontextmanager
    async def held(self, volume_id: str, *, timeout: float = MOUNT_WAIT) -> AsyncIterator[Path]:
        """The volume's mount, for a machine about to start: waits until the volume is
        made, grows its filesystem if that waited for this start, and holds the volume's
        own changes back until the block ends (the machine has started)."""
        await self._ready(volume_id, timeout)
        async with self._locks[volume_id]:
            size = self._pending_growth.pop(volume_id, None)
            if size is not None:
                try:
                    await self._files.extend(volume_id, size, offline=True)
                except VolumeError as exc:
                    log.warning("volume %s: not grown before a start: %s", volume_id, exc)
                    self._pending_growth[volume_id] = size
                self._wake.set()  # the next pass records the new size
            path = self._mounted.get(volume_id)
            if path is None:
                raise VolumeUnavailable(f"volume {volume_id} was removed from this host")
            yield path

    async def _ready(self, volume_id: str, timeout: float) -> None:
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(
                        lambda: volume_id in self._mounted or volume_id in self._failed
                    )
            except TimeoutError:
                raise VolumeUnavailable(
                    f"volume {volume_id} is not ready on this host after {timeout:.0f}s; "
                    f"see `roost volumes show {volume_id}`"
                ) from None
        if volume_id in self._failed:
            raise VolumeUnavailable(f"volume {volume_id} failed: {self._failed[volume_id]}")

    async def _set_mounted(self, volume_id: str, path: Path) -> None:
        async with self._changed:
            self._mounted[volume_id] = path
            self._failed.pop(volume_id, None)
            self._changed.notify_all()

    async def _set_failed(self, volume_id: str, why: str) -> None:
        async with self._changed:
            self._failed[volume_id] = why or "unknown error"
            self._changed.notify_all()

    # -- destroying ---------------------------------------------------------------------------

    async def _remove(self, entry: _Entry) -> bool:
        volume = entry.volume
        holder = volume.attached_machine_id
        if holder and await self._store.get(machine_key(volume.app, holder)) is not None:
            return False  # released with its machine, which wakes us
        await self._files.remove(volume.id)
        self._mounted.pop(volume.id, None)
        self._failed.pop(volume.id, None)
        self._pending_growth.pop(volume.id, None)
        alloc_key = hostalloc_key(self._host.id)
        while True:
            alloc_kv = await self._store.get(alloc_key)
            allocation = Allocation.from_json(alloc_kv.value) if alloc_kv else Allocation()
            released = dataclasses.replace(
                allocation, disk_gb=max(0, allocation.disk_gb - volume.size_gb)
            )
            result = await self._store.txn(
                [_unchanged(entry.kv), Compare.unchanged(alloc_kv, alloc_key)],
                [Delete(entry.kv.key), Put(alloc_key, released.to_json())],
            )
            if result.succeeded:
                log.info("volume %s: removed", volume.id)
                return False
            if await self._store.get(entry.kv.key) != entry.kv:
                return False  # changed meanwhile: the next pass sees how

    # -- snapshots ------------------------------------------------------------------------------

    async def _take(self, snapshot: SnapshotRecord, kv: KV, entry: _Entry | None) -> bool:
        if entry is None or entry.volume.state in ("failed", "destroying"):
            await self._write_snapshot(snapshot, kv, "error", error="its volume is gone")
            return False
        if entry.volume.state not in READABLE:
            return False  # still being made; that wakes us
        try:
            taken = await self._files.snapshot(entry.volume.id, snapshot.id)
        except VolumeError as exc:
            await self._write_snapshot(snapshot, kv, "error", error=str(exc))
            return False
        await self._write_snapshot(
            snapshot,
            kv,
            "taken",
            size=taken.size,
            digest=taken.digest,
            volume_size=entry.volume.size_gb * GIB,
            created_at=rfc3339_ms(self._clock()),
        )
        return False

    async def _expire(self, snapshots: list[tuple[SnapshotRecord, KV]]) -> None:
        now = self._clock()
        for snapshot, kv in snapshots:
            if snapshot.host_id != self._host.id or snapshot.status == "pending":
                continue
            try:
                taken = datetime.fromisoformat(snapshot.created_at).timestamp()
            except ValueError:
                continue
            if now - taken < snapshot.retention_days * 86400:
                continue
            await self._files.remove_snapshot(snapshot.id)
            await self._store.txn([_unchanged(kv)], [Delete(kv.key)])
            log.info("snapshot %s of volume %s: expired", snapshot.id, snapshot.volume_id)

    async def _reap(
        self, mine: dict[str, _Entry], snapshots: list[tuple[SnapshotRecord, KV]]
    ) -> None:
        """Remove images and snapshot files the store no longer knows (a crash between
        removing them and deleting their record leaves the record, so these are
        leftovers of something else: a wiped store, a host moved between fleets)."""
        for volume_id in self._files.known():
            if volume_id not in mine:
                log.warning("volume %s: not in the store; removing its image", volume_id)
                await self._files.remove(volume_id)
        kept = {s.id for s, _ in snapshots if s.host_id == self._host.id}
        for snapshot_id in self._files.known_snapshots():
            if snapshot_id not in kept:
                log.warning("snapshot %s: not in the store; removing its file", snapshot_id)
                await self._files.remove_snapshot(snapshot_id)

    # -- writing records ------------------------------------------------------------------------

    async def _write(self, entry: _Entry, event: VolumeInput, *, error: str = "") -> bool:
        """Move the volume on, with its filesystem's figures; False if it changed since
        it was read (the change wakes the next pass)."""
        volume = entry.volume
        new = dataclasses.replace(volume, state=volume_transition(volume.state, event), error=error)
        usage = self._files.usage(volume.id)
        if usage is not None:
            new = dataclasses.replace(
                new,
                block_size=usage.block_size,
                blocks=usage.blocks,
                blocks_free=usage.blocks_free,
                blocks_avail=usage.blocks_avail,
            )
        result = await self._store.txn([_unchanged(entry.kv)], [Put(entry.kv.key, new.to_json())])
        return result.succeeded

    async def _note(self, entry: _Entry, why: str) -> bool:
        """Say on the volume why it is not done yet (once); True: try again later."""
        if entry.volume.error != why:
            log.warning("volume %s: %s", entry.volume.id, why)
            noted = dataclasses.replace(entry.volume, error=why)
            await self._store.txn([_unchanged(entry.kv)], [Put(entry.kv.key, noted.to_json())])
        return True

    async def _write_snapshot(
        self, snapshot: SnapshotRecord, kv: KV, event: SnapshotInput, **changes: object
    ) -> None:
        new = dataclasses.replace(
            snapshot, status=snapshot_transition(snapshot.status, event), **changes
        )
        await self._store.txn([_unchanged(kv)], [Put(kv.key, new.to_json())])


class RemoteSnapshots:
    """Snapshots kept on other hosts, streamed from their agents' endpoints."""

    def __init__(self, store: Store, *, client: httpx.AsyncClient | None = None) -> None:
        self._store = store
        self._client = client or httpx.AsyncClient(trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def open(self, snapshot: SnapshotRecord) -> AsyncIterator[AsyncIterator[bytes]]:
        host_id = snapshot.host_id
        kv = await self._store.get(host_key(host_id))
        if kv is None or await self._store.get(alive_key(host_id)) is None:
            raise FetchFailed(
                f"host {host_id}, which keeps snapshot {snapshot.id}, is down; "
                "the restore goes on once it is back"
            )
        address = HostRecord.from_json(kv.value).address
        if not address:
            raise FetchFailed(f"host {host_id} registered no agent endpoint to fetch from")
        url = f"http://{address}{PREFIX}/snapshots/{snapshot.id}"
        headers = {HEADER: await cluster_secret(self._store)}
        timeout = httpx.Timeout(FETCH_CONNECT_TIMEOUT, read=FETCH_READ_TIMEOUT)
        try:
            async with self._client.stream("GET", url, headers=headers, timeout=timeout) as got:
                if got.status_code != 200:
                    body = (await got.aread()).decode(errors="replace")[:300]
                    raise FetchFailed(
                        f"host {host_id} did not send snapshot {snapshot.id} "
                        f"(HTTP {got.status_code}): {body}"
                    )
                yield got.aiter_bytes()
        except httpx.HTTPError as exc:
            raise FetchFailed(
                f"fetching snapshot {snapshot.id} from host {host_id} failed: {exc}"
            ) from None


def _unchanged(kv: KV) -> Compare:
    return Compare(kv.key, "mod_revision", "==", kv.mod_revision)
