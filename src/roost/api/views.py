"""Store records → the JSON bodies Fly clients expect."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from roost.images.base import InvalidReference
from roost.images.ref import parse_reference
from roost.store.records import (
    App,
    Event,
    LeaseRecord,
    MachineRecord,
    MachineStatus,
    SnapshotRecord,
    VolumeRecord,
)


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ms(seconds: float) -> str:
    """As Fly writes volume times: with milliseconds."""
    stamp = datetime.fromtimestamp(seconds, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def machine_state(record: MachineRecord, status: MachineStatus | None) -> str:
    if status is None:
        return "destroyed" if record.desired == "destroyed" else "created"
    return status.state


def host_status(record: MachineRecord, alive: bool) -> str:
    """``ok`` while the machine's host renews its liveness, ``unreachable`` once it stops."""
    return "ok" if alive or not record.host_id else "unreachable"


def machine_view(
    record: MachineRecord,
    status: MachineStatus | None,
    *,
    events: list[Event] | None = None,
    lease: LeaseRecord | None = None,
    nonce: str | None = None,
    host_status: str = "ok",
    summary: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "state": machine_state(record, status),
        "region": record.region,
        "instance_id": record.version,
        "version": record.version,
        "private_ip": record.private_ip,
        "image_ref": image_ref_view(record, status),
        "created_at": record.created_at,
        "updated_at": max(record.updated_at, status.updated_at if status else ""),
        "cordoned": record.cordoned,
    }
    if summary:
        return out
    out["config"] = record.config
    out["host_status"] = host_status
    out["events"] = [event_view(e) for e in events or []]
    out["checks"] = list(status.checks) if status else []
    if nonce:
        out["nonce"] = nonce
    if lease is not None:
        out["lease"] = {
            "owner": lease.owner,
            "expires_at": lease.expires_at,
            "description": lease.description,
        }
    return out


def image_ref_view(record: MachineRecord, status: MachineStatus | None) -> dict[str, Any]:
    """What the machine runs; before its first pull, what its config names (as on Fly),
    with the digest still unknown."""
    if status and status.image_ref:
        return status.image_ref
    try:
        ref = parse_reference(str(record.config.get("image", "")))
    except InvalidReference:
        return {"registry": "", "repository": "", "tag": "", "digest": "", "labels": {}}
    return {
        "registry": ref.registry,
        "repository": ref.repository,
        "tag": ref.tag,
        "digest": ref.digest,
        "labels": {},
    }


def event_view(event: Event) -> dict[str, Any]:
    """Fly's event shape: typed clients require ``request.exit_event`` and
    ``request.restart_count`` wherever ``request`` is present, so only exits carry one."""
    out: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "status": event.status,
        "source": event.source,
        "timestamp": event.timestamp,
    }
    if "exit_event" in event.request:
        out["request"] = {
            "exit_event": event.request["exit_event"],
            "restart_count": event.request.get("restart_count", 0),
        }
    if message := event.reason():
        out["message"] = message
    return out


def app_view(app: App, machine_count: int, volume_count: int = 0) -> dict[str, Any]:
    return {
        "id": app.id,
        "name": app.name,
        "status": "deployed" if machine_count else "pending",
        "machine_count": machine_count,
        "volume_count": volume_count,
        "network": app.network,
        "organization": {"name": app.org_slug, "slug": app.org_slug},
    }


def lease_view(lease: LeaseRecord) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "nonce": lease.nonce,
            "expires_at": lease.expires_at,
            "owner": lease.owner,
            "description": lease.description,
            "version": lease.version,
        },
    }


def volume_view(
    volume: VolumeRecord, *, host_status: str = "ok", summary: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": volume.id,
        "name": volume.name,
        "state": volume.state,
        "size_gb": volume.size_gb,
        "region": volume.region,
        "zone": volume.zone,
        "encrypted": volume.encrypted,
        "attached_machine_id": volume.attached_machine_id,
        "attached_alloc_id": None,
        "created_at": volume.created_at,
        "host_status": host_status,
        "fstype": volume.fstype,
        "snapshot_retention": volume.snapshot_retention,
        "auto_backup_enabled": volume.auto_backup_enabled,
        "type": "local",
    }
    if summary:
        return out
    out.update(
        block_size=volume.block_size,
        blocks=volume.blocks,
        blocks_free=volume.blocks_free,
        blocks_avail=volume.blocks_avail,
        bytes_total=volume.blocks * volume.block_size,
        bytes_used=(volume.blocks - volume.blocks_free) * volume.block_size,
    )
    if volume.error:
        out["error"] = volume.error
    return out


def snapshot_view(snapshot: SnapshotRecord) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "size": snapshot.size,
        "volume_size": snapshot.volume_size,
        "digest": snapshot.digest,
        "created_at": snapshot.created_at,
        "status": snapshot.status,
        "retention_days": snapshot.retention_days,
    }
