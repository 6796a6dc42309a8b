"""Request bodies of the Machines API (the wire edge; responses are built in views.py)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, BeforeValidator, Field, StrictBool, StrictInt

from roost.spec.config import Duration, MachineConfig, WireModel
from roost.spec.signals import SIGNAL_NAMES, STOP_SIGNAL_NAMES, parse_signal

MAX_VOLUME_GB = 500
"""Fly's largest volume."""


def _flag(value: Any) -> bool:
    # Query flags as Go servers read them: anything but a true word is false, so
    # ``?include_deleted=`` (what some clients send) is no error.
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "t", "true", "y", "yes", "on")


Flag = Annotated[bool, BeforeValidator(_flag)]
"""A boolean query parameter."""


def _signal_number(allowed: tuple[str, ...]) -> Any:
    def check(value: Any) -> int:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("signal must be a name like 'SIGTERM' or a number")
        return parse_signal(value, allowed)

    return BeforeValidator(check)


class CreateAppRequest(WireModel):
    # Older docs and clients call it app_name.
    name: Annotated[str, Field(validation_alias=AliasChoices("name", "app_name"))]
    org_slug: str = "personal"
    network: str | None = None
    enable_subdomains: StrictBool | None = None
    idempotency_key: str | None = None


class CreateMachineRequest(WireModel):
    config: MachineConfig
    name: str | None = None
    region: str | None = None
    skip_launch: StrictBool = False
    skip_service_registration: StrictBool = False
    lease_ttl: Annotated[StrictInt, Field(ge=1, le=3600)] | None = None
    min_secrets_version: StrictInt | None = None
    skip_secrets: StrictBool | None = None


class UpdateMachineRequest(CreateMachineRequest):
    current_version: str | None = None


class StopRequest(WireModel):
    signal: Annotated[StrictInt, _signal_number(STOP_SIGNAL_NAMES)] | None = None
    timeout: Duration | None = None


class SignalRequest(WireModel):
    signal: Annotated[StrictInt, _signal_number(SIGNAL_NAMES)]


class CreateLeaseRequest(WireModel):
    ttl: Annotated[StrictInt, Field(ge=1, le=3600)] | None = None
    description: str | None = None


class UpdateMetadataRequest(WireModel):
    metadata: dict[str, str | None]
    machine_version: str | None = None
    updated_at: str | None = None


class UpsertMetadataKeyRequest(WireModel):
    value: str
    updated_at: str | None = None


class ExecRequest(WireModel):
    command: list[str] | None = None
    cmd: str | None = None
    """Deprecated by Fly in favour of ``command``; split like a shell would."""
    stdin: str | None = None
    timeout: StrictInt | None = None
    container: str | None = None
    machine: StrictBool | None = None


class CreateVolumeRequest(WireModel):
    name: str
    region: str | None = None
    size_gb: Annotated[StrictInt, Field(ge=1, le=MAX_VOLUME_GB)] | None = None
    """Default: the snapshot's size when restoring, else 3 (Fly's default)."""
    snapshot_id: str | None = None
    source_volume_id: str | None = None
    """Fork: snapshot this volume and restore the snapshot into the new one."""
    snapshot_retention: Annotated[StrictInt, Field(ge=1, le=60)] | None = None
    fstype: str | None = None
    # Accepted so Fly clients work, and ignored: volumes are never encrypted, never
    # snapshotted on a schedule, and spread across hosts (zones) only as a preference.
    encrypted: StrictBool | None = None
    auto_backup_enabled: StrictBool | None = None
    require_unique_zone: StrictBool | None = None
    unique_zone_app_wide: StrictBool | None = None
    compute: dict[str, Any] | None = None
    compute_image: str | None = None


class UpdateVolumeRequest(WireModel):
    snapshot_retention: Annotated[StrictInt, Field(ge=1, le=60)] | None = None
    auto_backup_enabled: StrictBool | None = None


class ExtendVolumeRequest(WireModel):
    size_gb: Annotated[StrictInt, Field(ge=1, le=MAX_VOLUME_GB)]
