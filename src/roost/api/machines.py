"""Machine operations: each API call becomes one compare-and-swap store transaction.

The API only records intent: a new desired state, a bumped ``generation`` and the
``action`` that caused it. The host's agent watches its machines and applies every
generation exactly once, writing the actual state back to ``/status``. So a crash of
the API after a write loses nothing, and a crash before it leaves nothing half-done:
every write a call makes (machine, capacity, address, name, lease, the volume it
mounts) commits together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from roost.api import settle
from roost.api.errors import (
    AppNotFound,
    BadRequest,
    Conflict,
    LeaseHeld,
    LeaseNotFound,
    MachineBusy,
    MachineNotFound,
    NotFound,
    PreconditionFailed,
    Timeout,
    VersionConflict,
)
from roost.api.leases import DEFAULT_TTL, check_nonce, live_lease
from roost.api.names import machine_name
from roost.api.placement import Placement, parse_regions
from roost.api.schemas import CreateMachineRequest, UpdateMachineRequest
from roost.api.views import event_view, host_status, lease_view, machine_view, rfc3339
from roost.api.volumes import attachment, mounted_volumes
from roost.cluster import alive_hosts
from roost.images.base import InvalidReference
from roost.images.ref import parse_reference
from roost.net.ipam import FIRST_INDEX, MachineAddressing
from roost.spec import ids
from roost.spec.config import MachineConfig
from roost.spec.states import SETTLED, TRANSIENT
from roost.spec.unhonoured import describe
from roost.store import KV, Compare, Delete, Put, Store
from roost.store.records import (
    IPAM_PREFIX,
    Allocation,
    Command,
    DesiredState,
    Event,
    HostRecord,
    LeaseRecord,
    MachineRecord,
    MachineStatus,
    VersionRecord,
    alive_key,
    app_key,
    command_key,
    event_key,
    events_prefix,
    host_key,
    hostalloc_key,
    ipam_key,
    lease_key,
    machine_key,
    machines_prefix,
    mid_key,
    name_key,
    parse_ipam_key,
    status_key,
    version_key,
    versions_prefix,
)

CAS_ATTEMPTS = 50
EVENTS_IN_VIEW = 10
VERSIONS_KEPT = 20
# Machines in these states are running, or about to be: destroying them needs force.
ACTIVE_STATES = frozenset({"started", "starting", "restarting", "replacing"})


@dataclass(frozen=True, slots=True)
class Caller:
    token_id: str
    name: str


@dataclass(slots=True)
class Snapshot:
    """One machine's keys, as read together for a compare-and-swap."""

    record: MachineRecord
    record_kv: KV
    status: MachineStatus | None
    status_revision: int
    lease: LeaseRecord | None
    lease_kv: KV | None

    @property
    def state(self) -> str:
        return self.status.state if self.status else "created"

    @property
    def busy(self) -> bool:
        """In the middle of an operation: moving between states, or given an order its
        agent has not carried out yet."""
        applied = self.status.generation if self.status else 0
        return self.state in TRANSIENT or applied < self.record.generation


class Machines:
    def __init__(
        self,
        store: Store,
        placement: Placement,
        addressing: MachineAddressing,
        *,
        region: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._placement = placement
        self._addressing = addressing
        self._region = region
        self._clock = clock

    # -- create ---------------------------------------------------------------------

    async def create(self, app: str, req: CreateMachineRequest, caller: Caller) -> dict[str, Any]:
        if await self._store.get(app_key(app)) is None:
            raise AppNotFound(app)
        config = req.config
        _check_image(config.image)
        if req.name and not ids.is_machine_name(req.name):
            raise BadRequest(
                f"invalid machine name {req.name!r}: use up to {ids.MAX_MACHINE_NAME} "
                "characters other than '/' and NUL"
            )
        guest = config.resolved_guest
        regions = parse_regions(req.region, self._region)
        for _ in range(CAS_ATTEMPTS):
            now = self._clock()
            name = req.name or machine_name()
            name_kv = await self._store.get(name_key(app, name))
            if name_kv is not None:
                if req.name:
                    raise Conflict(
                        f"a machine named {req.name!r} already exists in app {app!r}; "
                        "choose another name"
                    )
                continue
            volume = await attachment(self._store, app, config, None)
            if volume is None:
                candidates = await self._placement.candidates(regions, guest, app=app)
            else:
                if req.region and not await self._placement.serves(volume.volume.host_id, regions):
                    raise BadRequest(
                        f"the machine's volume is in region {volume.volume.region}, not in "
                        f"{req.region}; a machine runs where its volume is"
                    )
                candidates = [await self._placement.volume_host(volume.volume, guest)]
            index = await self._free_ip_index()
            address = self._addressing.address(index)
            ipv4, ipv6 = str(address.v4), str(address.v6)
            chosen = candidates[0]
            mid = ids.machine_id()
            version = ids.ulid(now)
            stamp = rfc3339(now)
            record = MachineRecord(
                id=mid,
                app=app,
                name=name,
                region=chosen.host.region,
                host_id=chosen.host.id,
                config=config.wire(),
                version=version,
                desired="stopped" if req.skip_launch else "started",
                action="launch",
                cordoned=req.skip_service_registration,
                ip_index=index,
                private_ip=ipv6,
                ipv4=ipv4,
                created_at=stamp,
                updated_at=stamp,
            )
            status = MachineStatus(
                state="created", version=version, host_id=chosen.host.id, updated_at=stamp
            )
            allocation = dataclasses.replace(
                chosen.allocation,
                cpus=chosen.allocation.cpus + guest.cpu_slots,
                memory_mb=chosen.allocation.memory_mb + guest.memory_mb,
                machines=chosen.allocation.machines + 1,
            )
            puts = [
                Put(machine_key(app, mid), record.to_json()),
                Put(status_key(app, mid), status.to_json()),
                Put(version_key(app, mid, version), _version(version, record.config, stamp)),
                Put(mid_key(mid), app),
                Put(name_key(app, name), mid),
                Put(ipam_key(index), mid),
                Put(hostalloc_key(chosen.host.id), allocation.to_json()),
            ]
            lease = None
            if req.lease_ttl:
                lease = self._new_lease(caller, req.lease_ttl, "machine create", version, now)
                puts.append(Put(lease_key(app, mid), lease.to_json()))
            compares = [
                Compare(app_key(app), "create_revision", ">", 0),
                Compare.absent(machine_key(app, mid)),
                Compare.absent(mid_key(mid)),
                Compare.absent(name_key(app, name)),
                Compare.absent(ipam_key(index)),
                Compare.unchanged(chosen.allocation_kv, hostalloc_key(chosen.host.id)),
            ]
            if volume is not None:
                unchanged, attach = volume.ops(mid)
                compares.append(unchanged)
                puts.append(attach)
            notices = _notices(app, mid, config, now)
            puts.extend(Put(event_key(app, mid, e.id), e.to_json()) for e in notices)
            result = await self._store.txn(compares, puts)
            if result.succeeded:
                return machine_view(
                    record, status, events=notices, nonce=lease.nonce if lease else None
                )
            if await self._store.get(app_key(app)) is None:
                raise AppNotFound(app)
        raise Conflict("too many concurrent changes while creating the machine; retry")

    async def _free_ip_index(self) -> int:
        taken = await self._store.range(IPAM_PREFIX)
        expected = FIRST_INDEX
        for kv in taken.kvs:
            index = parse_ipam_key(kv.key)
            if index > expected:
                break
            expected = index + 1
        if expected > self._addressing.last_index:
            raise PreconditionFailed(
                "failed_precondition: no private addresses left; destroy unused machines"
            )
        return expected

    # -- read -----------------------------------------------------------------------

    async def get(
        self, app: str, mid: str, *, version: str | None = None, include_leases: bool = False
    ) -> dict[str, Any]:
        snap = await self._load(app, mid, allow_destroyed=True)
        if version and version != snap.record.version:
            kv = await self._store.get(version_key(app, mid, version))
            if kv is None:
                raise MachineNotFound(mid)
            old = VersionRecord.from_json(kv.value)
            record = dataclasses.replace(snap.record, version=old.version, config=old.config)
            status = MachineStatus(state="replaced", version=old.version)
            return machine_view(record, status)
        events = await self._events(app, mid, EVENTS_IN_VIEW)
        alive = await self._store.get(alive_key(snap.record.host_id))
        return machine_view(
            snap.record,
            snap.status,
            events=events,
            lease=snap.lease if include_leases else None,
            host_status=host_status(snap.record, alive is not None),
        )

    async def list(
        self,
        app: str,
        *,
        region: str | None = None,
        states: Sequence[str] = (),
        metadata: dict[str, str] | None = None,
        include_deleted: bool = False,
        include_leases: bool = False,
        summary: bool = False,
    ) -> list[dict[str, Any]]:
        await self._require_app(app)
        records = await self._store.range(machines_prefix(app))
        statuses = {
            kv.key.rsplit("/", 1)[1]: MachineStatus.from_json(kv.value)
            for kv in (await self._store.range(f"/status/{app}/")).kvs
        }
        leases = {}
        if include_leases:
            now = self._clock()
            for kv in (await self._store.range(f"/leases/{app}/")).kvs:
                lease = live_lease(kv, now)
                if lease:
                    leases[kv.key.rsplit("/", 1)[1]] = lease
        alive = await alive_hosts(self._store)
        names = await self._placement.region_map()
        out = []
        for kv in records.kvs:
            record = MachineRecord.from_json(kv.value)
            status = statuses.get(record.id)
            state = status.state if status else "created"
            if state == "destroyed" and not include_deleted:
                continue
            if region and record.region != region and not names.serves(record.host_id, region):
                continue
            if states and state not in states:
                continue
            if metadata:
                have = record.config.get("metadata") or {}
                if any(have.get(k) != v for k, v in metadata.items()):
                    continue
            out.append(
                machine_view(
                    record,
                    status,
                    lease=leases.get(record.id),
                    host_status=host_status(record, record.host_id in alive),
                    summary=summary,
                )
            )
        return out

    async def events(self, app: str, mid: str, limit: int) -> list[dict[str, Any]]:
        await self._load(app, mid, allow_destroyed=True)
        return [event_view(e) for e in await self._events(app, mid, limit)]

    async def _events(self, app: str, mid: str, limit: int) -> list[Event]:
        kvs = (await self._store.range(events_prefix(app, mid))).kvs
        # ULID keys sort oldest first; the wire wants newest first.
        return [Event.from_json(kv.value) for kv in reversed(kvs[-limit:])] if limit else []

    async def versions(self, app: str, mid: str) -> list[dict[str, Any]]:
        await self._load(app, mid, allow_destroyed=True)
        kvs = (await self._store.range(versions_prefix(app, mid))).kvs
        out = []
        for kv in reversed(kvs):
            version = VersionRecord.from_json(kv.value)
            out.append({"version": version.version, "user_config": version.config})
        return out

    # -- lifecycle --------------------------------------------------------------------

    async def update(
        self, app: str, mid: str, req: UpdateMachineRequest, nonce: str | None
    ) -> dict[str, Any]:
        config = req.config
        _check_image(config.image)
        until = settle.deadline()
        for _ in range(CAS_ATTEMPTS):
            snap = await self._load(app, mid)
            check_nonce(mid, snap.lease, nonce)
            record = snap.record
            if req.current_version and req.current_version != record.version:
                raise VersionConflict(
                    f"machine {mid} is at version {record.version}, not {req.current_version}; "
                    "fetch it again and retry the update"
                )
            if req.name and req.name != record.name:
                raise BadRequest("a machine's name cannot be changed by an update")
            if mounted_volumes(record.config) != mounted_volumes(config.wire()):
                raise BadRequest(
                    "a machine's volume cannot be added, removed or swapped by an update; "
                    "create a new machine to mount another volume"
                )
            if snap.state == "replacing":
                busy = MachineBusy(
                    "failed_precondition: machine getting replaced, refusing to update"
                )
                await self._wait_out(snap, busy, until)
                continue
            now = self._clock()
            stamp = rfc3339(now)
            new_config = config.wire()
            # Metadata has its own endpoints; an update without it keeps the old one.
            if "metadata" not in new_config and record.config.get("metadata"):
                new_config["metadata"] = record.config["metadata"]
            version = ids.ulid(now)
            desired: DesiredState = "started"
            if req.skip_launch and record.desired != "started":
                desired = "stopped"
            new = dataclasses.replace(
                record,
                config=new_config,
                version=version,
                desired=desired,
                generation=record.generation + 1,
                action="update",
                stop_signal=None,
                stop_timeout=None,
                updated_at=stamp,
            )
            compares, puts = self._cas(snap, new)
            puts.append(Put(version_key(app, mid, version), _version(version, new_config, stamp)))
            notices = _notices(app, mid, config, now)
            puts.extend(Put(event_key(app, mid, e.id), e.to_json()) for e in notices)
            await self._resize(record, config, compares, puts)
            if (await self._store.txn(compares, puts)).succeeded:
                await self._trim_versions(app, mid)
                return machine_view(new, snap.status, events=notices)
        raise Conflict("too many concurrent changes to the machine; retry")

    async def _trim_versions(self, app: str, mid: str) -> None:
        # Not in the update's transaction: a version left over by a crash here is harmless.
        kvs = (await self._store.range(versions_prefix(app, mid))).kvs
        for kv in kvs[:-VERSIONS_KEPT]:
            await self._store.delete(kv.key)

    async def _resize(
        self, record: MachineRecord, config: MachineConfig, compares: list, puts: list
    ) -> None:
        old = MachineConfig.model_validate(record.config).resolved_guest
        new = config.resolved_guest
        if (old.cpu_slots, old.memory_mb) == (new.cpu_slots, new.memory_mb):
            return
        alloc_kv = await self._store.get(hostalloc_key(record.host_id))
        allocation = Allocation.from_json(alloc_kv.value) if alloc_kv else Allocation()
        allocation = dataclasses.replace(
            allocation,
            cpus=allocation.cpus + new.cpu_slots - old.cpu_slots,
            memory_mb=allocation.memory_mb + new.memory_mb - old.memory_mb,
        )
        host_kv = await self._store.get(host_key(record.host_id))
        if host_kv is not None:
            host = HostRecord.from_json(host_kv.value)
            if allocation.memory_mb > host.memory_mb or allocation.cpus > host.cpus:
                raise Conflict(
                    "aborted: could not reserve resource for machine: insufficient memory "
                    "available to fulfill request; create a new machine elsewhere instead"
                )
        compares.append(Compare.unchanged(alloc_kv, hostalloc_key(record.host_id)))
        puts.append(Put(hostalloc_key(record.host_id), allocation.to_json()))

    async def start(self, app: str, mid: str, nonce: str | None) -> dict[str, Any]:
        def change(snap: Snapshot) -> MachineRecord | None:
            if snap.state == "replacing":
                raise MachineBusy(
                    "failed_precondition: machine getting replaced, refusing to start"
                )
            if snap.record.desired == "started" and snap.state in ("started", "starting"):
                return None
            return self._desire(snap.record, "started", "start")

        snap, _ = await self._mutate(app, mid, nonce, change)
        return {"previous_state": snap.state, "migrated": False, "new_host": ""}

    async def stop(
        self,
        app: str,
        mid: str,
        nonce: str | None,
        *,
        signum: int | None = None,
        timeout: float | None = None,
        desired: DesiredState = "stopped",
    ) -> dict[str, Any]:
        def change(snap: Snapshot) -> MachineRecord | None:
            if snap.record.desired == desired and snap.record.stop_signal == signum:
                return None
            if snap.record.desired != "started" and snap.state not in ACTIVE_STATES:
                return None
            action = "suspend" if desired == "suspended" else "stop"
            return self._desire(snap.record, desired, action, signum, timeout)

        await self._mutate(app, mid, nonce, change)
        return {"ok": True}

    async def restart(
        self, app: str, mid: str, nonce: str | None, *, signum: int | None, timeout: float | None
    ) -> dict[str, Any]:
        def change(snap: Snapshot) -> MachineRecord:
            if snap.state == "replacing":
                raise MachineBusy(
                    "failed_precondition: machine getting replaced, refusing to restart"
                )
            return self._desire(snap.record, "started", "restart", signum, timeout)

        await self._mutate(app, mid, nonce, change)
        return {"ok": True}

    async def destroy(
        self, app: str, mid: str, nonce: str | None, *, force: bool, lease_gated: bool = True
    ) -> None:
        def change(snap: Snapshot) -> MachineRecord | None:
            if snap.record.desired == "destroyed":
                return None
            if snap.state in ACTIVE_STATES and not force:
                # Say, stopped a moment ago and not down yet: destroy once it is.
                refusal = MachineBusy if snap.busy else PreconditionFailed
                raise refusal(
                    f"failed_precondition: machine {mid} is {snap.state}; stop it first "
                    "or destroy it with force=true"
                )
            return self._desire(
                snap.record, "destroyed", "destroy", signal.SIGKILL if force else None, None
            )

        def release(snap: Snapshot) -> list[Put | Delete]:
            # The name and lease go now; the address and capacity go when the agent
            # has actually torn the machine down, so they are never handed out twice.
            return [Delete(name_key(app, snap.record.name)), Delete(lease_key(app, mid))]

        await self._mutate(
            app, mid, nonce, change, extra=release, allow_destroyed=True, lease_gated=lease_gated
        )

    async def cordon(self, app: str, mid: str, nonce: str | None, cordoned: bool) -> None:
        def change(snap: Snapshot) -> MachineRecord | None:
            if snap.record.cordoned == cordoned:
                return None
            stamp = rfc3339(self._clock())
            return dataclasses.replace(snap.record, cordoned=cordoned, updated_at=stamp)

        await self._mutate(app, mid, nonce, change)

    async def signal(self, app: str, mid: str, signum: int) -> None:
        until = settle.deadline()
        while True:
            snap = await self._load(app, mid)
            if snap.state == "started":
                break
            message = (
                f"failed_precondition: machine {mid} is {snap.state}; only a running "
                "machine can be signalled"
            )
            if not snap.busy:
                raise PreconditionFailed(message)
            await self._wait_out(snap, MachineBusy(message), until)
        command = Command(id=ids.ulid(self._clock()), type="signal", signal=signum)
        await self._store.put(command_key(snap.record.host_id, mid, command.id), command.to_json())

    async def _mutate(
        self,
        app: str,
        mid: str,
        nonce: str | None,
        change: Callable[[Snapshot], MachineRecord | None],
        *,
        extra: Callable[[Snapshot], list[Put | Delete]] | None = None,
        allow_destroyed: bool = False,
        lease_gated: bool = True,
    ) -> tuple[Snapshot, MachineRecord | None]:
        until = settle.deadline()
        for _ in range(CAS_ATTEMPTS):
            snap = await self._load(app, mid, allow_destroyed=allow_destroyed)
            if lease_gated:
                check_nonce(mid, snap.lease, nonce)
            try:
                new = change(snap)
            except MachineBusy as busy:
                await self._wait_out(snap, busy, until)
                continue
            if new is None:
                return snap, None
            compares, puts = self._cas(snap, new)
            if extra:
                puts.extend(extra(snap))
            if (await self._store.txn(compares, puts)).succeeded:
                return snap, new
        raise Conflict("too many concurrent changes to the machine; retry")

    async def _wait_out(self, snap: Snapshot, busy: MachineBusy, until: float) -> None:
        """Queue behind the operation the machine is in the middle of (see
        ``api.settle``): back once its status changes, ``busy`` raised at ``until``."""
        key = status_key(snap.record.app, snap.record.id)
        host = snap.record.host_id
        if not await settle.next_change(
            self._store, key, snap.status_revision, until, host_id=host
        ):
            raise busy

    def _cas(self, snap: Snapshot, new: MachineRecord) -> tuple[list[Compare], list[Any]]:
        key = machine_key(new.app, new.id)
        compares = [
            Compare(key, "mod_revision", "==", snap.record_kv.mod_revision),
            Compare.unchanged(snap.lease_kv, lease_key(new.app, new.id)),
        ]
        return compares, [Put(key, new.to_json())]

    def _desire(
        self,
        record: MachineRecord,
        desired: DesiredState,
        action: Any,
        signum: int | None = None,
        timeout: float | None = None,
    ) -> MachineRecord:
        return dataclasses.replace(
            record,
            desired=desired,
            generation=record.generation + 1,
            action=action,
            stop_signal=signum,
            stop_timeout=timeout,
            updated_at=rfc3339(self._clock()),
        )

    # -- wait ---------------------------------------------------------------------------

    async def wait(
        self,
        app: str,
        mid: str,
        *,
        states: Sequence[str],
        timeout: float,
        version: str | None = None,
        from_event_id: str | None = None,
    ) -> dict[str, Any]:
        """Until the machine is in one of ``states``; with ``version`` only that version
        counts, with ``from_event_id`` only states reached after that event."""
        snap = await self._load(app, mid, allow_destroyed=True)
        key = status_key(app, mid)
        status_kv = await self._store.get(key)

        def reached(status: MachineStatus | None) -> str | None:
            state = status.state if status else "destroyed"
            if version and status and status.version != version:
                return None
            if from_event_id and status and status.event_id <= from_event_id:
                return None
            if state in states or ("settled" in states and state in SETTLED):
                return state
            return None

        status = MachineStatus.from_json(status_kv.value) if status_kv else None
        if (state := reached(status)) is not None:
            return _waited(state, status, snap.record)
        from_revision = (status_kv.mod_revision if status_kv else snap.record_kv.mod_revision) + 1
        try:
            async with asyncio.timeout(timeout):
                async for event in self._store.watch(key, from_revision):
                    if event.kv.key != key:
                        continue
                    status = (
                        MachineStatus.from_json(event.kv.value) if event.type == "put" else None
                    )
                    if (state := reached(status)) is not None:
                        return _waited(state, status, snap.record)
        except TimeoutError:
            pass
        current = status.state if status else "destroyed"
        raise Timeout(
            f"deadline_exceeded: machine failed to reach desired state, {','.join(states)}, "
            f"currently {current}"
        )

    # -- leases -------------------------------------------------------------------------

    async def lease_get(self, app: str, mid: str) -> dict[str, Any]:
        snap = await self._load(app, mid)
        if snap.lease is None:
            raise LeaseNotFound()
        return lease_view(snap.lease)

    async def lease_acquire(
        self,
        app: str,
        mid: str,
        caller: Caller,
        *,
        ttl: int | None,
        description: str | None,
        nonce: str | None,
    ) -> dict[str, Any]:
        for _ in range(CAS_ATTEMPTS):
            snap = await self._load(app, mid)
            now = self._clock()
            ttl_s = ttl or DEFAULT_TTL
            if snap.lease is not None:
                if nonce != snap.lease.nonce:
                    check_nonce(mid, snap.lease, nonce)
                lease = dataclasses.replace(
                    snap.lease,
                    expires_at=int(now + ttl_s),
                    description=description or snap.lease.description,
                    version=snap.record.version,
                )
            else:
                lease = self._new_lease(caller, ttl_s, description or "", snap.record.version, now)
            key = lease_key(app, mid)
            result = await self._store.txn(
                [
                    Compare.unchanged(snap.lease_kv, key),
                    Compare(machine_key(app, mid), "create_revision", ">", 0),
                ],
                [Put(key, lease.to_json())],
            )
            if result.succeeded:
                return lease_view(lease)
        raise Conflict("too many concurrent lease changes; retry")

    async def lease_release(self, app: str, mid: str, nonce: str | None) -> dict[str, Any]:
        if not nonce:
            raise BadRequest("the fly-machine-lease-nonce header is required to release a lease")
        snap = await self._load(app, mid)
        if snap.lease is None:
            raise LeaseNotFound()
        if snap.lease.nonce != nonce:
            raise LeaseHeld(
                f"aborted: machine ID {mid} lease currently held by {snap.lease.owner}; "
                "the nonce does not match"
            )
        key = lease_key(app, mid)
        await self._store.txn([Compare.unchanged(snap.lease_kv, key)], [Delete(key)])
        return {"status": "success", "data": {"ok": True}}

    def _new_lease(
        self, caller: Caller, ttl: int, description: str, version: str, now: float
    ) -> LeaseRecord:
        return LeaseRecord(
            nonce=ids.lease_nonce(),
            owner=caller.name,
            description=description,
            expires_at=int(now + ttl),
            version=version,
        )

    # -- metadata -------------------------------------------------------------------------

    async def metadata_get(self, app: str, mid: str) -> dict[str, str]:
        snap = await self._load(app, mid)
        return dict(snap.record.config.get("metadata") or {})

    async def metadata_update(
        self, app: str, mid: str, changes: dict[str, str | None], machine_version: str | None
    ) -> None:
        for key in changes:
            _check_metadata_key(key)

        def change(snap: Snapshot) -> MachineRecord:
            if machine_version and machine_version != snap.record.version:
                raise PreconditionFailed(
                    f"failed_precondition: machine is at version {snap.record.version}, "
                    f"not {machine_version}"
                )
            metadata = dict(snap.record.config.get("metadata") or {})
            for key, value in changes.items():
                if value:
                    metadata[key] = value
                else:
                    metadata.pop(key, None)
            return self._with_metadata(snap.record, metadata)

        await self._mutate(app, mid, None, change, lease_gated=False)

    async def metadata_get_key(self, app: str, mid: str, key: str) -> dict[str, str]:
        metadata = await self.metadata_get(app, mid)
        if key not in metadata:
            raise NotFound(f"metadata key {key!r} not found")
        return {"value": metadata[key]}

    def _with_metadata(self, record: MachineRecord, metadata: dict[str, str]) -> MachineRecord:
        # Metadata writes change the config but, as on Fly, not the version.
        config = dict(record.config)
        if metadata:
            config["metadata"] = metadata
        else:
            config.pop("metadata", None)
        return dataclasses.replace(record, config=config, updated_at=rfc3339(self._clock()))

    # -- helpers --------------------------------------------------------------------------

    async def require_app(self, app: str) -> None:
        await self._require_app(app)

    async def _require_app(self, app: str) -> None:
        if await self._store.get(app_key(app)) is None:
            raise AppNotFound(app)

    async def _load(self, app: str, mid: str, *, allow_destroyed: bool = False) -> Snapshot:
        if not ids.is_machine_id(mid):
            raise MachineNotFound(mid)
        kv = await self._store.get(machine_key(app, mid))
        if kv is None:
            await self._require_app(app)
            raise MachineNotFound(mid)
        record = MachineRecord.from_json(kv.value)
        if record.desired == "destroyed" and not allow_destroyed:
            raise MachineNotFound(mid)
        status_kv, lease_kv = await asyncio.gather(
            self._store.get(status_key(app, mid)), self._store.get(lease_key(app, mid))
        )
        return Snapshot(
            record=record,
            record_kv=kv,
            status=MachineStatus.from_json(status_kv.value) if status_kv else None,
            status_revision=status_kv.mod_revision if status_kv else kv.mod_revision,
            lease=live_lease(lease_kv, self._clock()),
            lease_kv=lease_kv,
        )


def _waited(state: str, status: MachineStatus | None, record: MachineRecord) -> dict[str, Any]:
    out = {"ok": True, "state": state, "version": status.version if status else record.version}
    if status and status.event_id:
        out["event_id"] = status.event_id
    return out


def _notices(app: str, mid: str, config: MachineConfig, now: float) -> list[Event]:
    """Tell, on the machine, what of its config roost will not act on."""
    message = describe(config)
    if not message:
        return []
    return [
        Event(
            id=ids.ulid(now),
            type="config",
            status="ignored",
            source="flyd",
            timestamp=int(now * 1000),
            message=message,
        )
    ]


def _version(version: str, config: dict[str, Any], stamp: str) -> str:
    return VersionRecord(version=version, config=config, created_at=stamp).to_json()


def _check_image(image: str) -> None:
    try:
        parse_reference(image)
    except InvalidReference as exc:
        raise BadRequest(str(exc)) from None


def _check_metadata_key(key: str) -> None:
    if not ids.is_metadata_key(key):
        raise BadRequest(f"invalid metadata key {key!r}: use up to 128 letters, digits and . _ - /")
