"""Response bodies of the API, as models: what ``/openapi.json`` documents.

The routes build their bodies as plain dicts (``views.py``) and return them as they are;
these models describe them, field for field, in Fly's shapes (the official spec's
``Machine``, ``MachineEvent``, ``Lease``, ...), plus roost's own endpoints. The test
suite fuzzes the served document and checks every answer against it, so a view that
drifts from its model fails there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from roost.spec.config import MachineConfig


class Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorResponse(Body):
    error: str
    status: (
        Literal["unknown", "insufficient_capacity", "volume_placement_capacity", "name_taken"]
        | None
    ) = Field(None, description="Fly's code for errors a client can act on.")


class Ok(Body):
    ok: bool


# -- apps -------------------------------------------------------------------------------


class Organization(Body):
    name: str
    slug: str


class App(Body):
    id: str
    name: str
    status: str
    machine_count: int
    volume_count: int
    network: str
    organization: Organization


class AppList(Body):
    apps: list[App]
    total_apps: int
    next_cursor: str | None = Field(None, description="With limit, while more apps remain.")


class CreatedApp(Body):
    id: str
    created_at: int = Field(description="Unix milliseconds.")


# -- machines ---------------------------------------------------------------------------


class ImageRef(Body):
    registry: str
    repository: str
    tag: str
    digest: str
    labels: dict[str, str]


class ExitEvent(Body):
    exit_code: int
    guest_exit_code: int
    guest_signal: int
    signal: int
    oom_killed: bool
    requested_stop: bool
    restarting: bool
    exited_at: str


class EventRequest(Body):
    exit_event: ExitEvent
    restart_count: int


class MachineEvent(Body):
    id: str
    type: str
    status: str
    source: Literal["user", "flyd"]
    timestamp: int = Field(description="Unix milliseconds.")
    request: EventRequest | None = Field(None, description="Only on exit events.")
    message: str | None = Field(None, description="Why, where the event has a reason.")


class CheckStatus(Body):
    name: str
    status: Literal["passing", "warning", "critical"]
    output: str
    updated_at: str


class StrippedLease(Body):
    owner: str
    expires_at: int
    description: str


class Machine(Body):
    id: str
    name: str
    state: str
    region: str
    instance_id: str
    version: str
    private_ip: str
    image_ref: ImageRef
    created_at: str
    updated_at: str
    cordoned: bool
    config: MachineConfig | None = Field(None, description="Left out of summaries.")
    host_status: Literal["ok", "unknown", "unreachable"] | None = None
    events: list[MachineEvent] | None = None
    checks: list[CheckStatus] | None = None
    nonce: str | None = Field(None, description="On create with lease_ttl only.")
    lease: StrippedLease | None = Field(None, description="With include_leases only.")


class MachineVersion(Body):
    version: str
    user_config: MachineConfig


class Started(Body):
    previous_state: str
    migrated: bool
    new_host: str


class Waited(Body):
    ok: bool
    state: str
    version: str
    event_id: str | None = None


class Lease(Body):
    nonce: str
    expires_at: int = Field(description="Unix seconds.")
    owner: str
    description: str
    version: str


class LeaseEnvelope(Body):
    status: Literal["success"]
    data: Lease


class ReleasedEnvelope(Body):
    status: Literal["success"]
    data: Ok


class MetadataValue(Body):
    value: str


# -- inside machines ----------------------------------------------------------------------


class ExecResult(Body):
    exit_code: int
    stdout: str
    stderr: str
    exit_signal: int | None = None


class ListenSocket(Body):
    proto: str
    address: str


class ProcessStat(Body):
    pid: int
    command: str
    directory: str
    cpu: int
    rss: int
    stime: int
    rtime: int
    listen_sockets: list[ListenSocket]


class LogLine(Body):
    timestamp: str
    machine: str
    app: str
    region: str
    stream: str
    message: str


class MachineUsage(Body):
    machine: str
    app: str
    running_seconds: dict[str, float]
    stopped_seconds: float
    rootfs_bytes: int
    volume_bytes: int


class UsageTotals(Body):
    running_seconds: dict[str, float]
    stopped_seconds: float
    rootfs_bytes: int
    volume_bytes: int


class Usage(Body):
    app: str | None
    since: float | None
    machines: list[MachineUsage]
    totals: UsageTotals


# -- volumes ------------------------------------------------------------------------------


class Volume(Body):
    id: str
    name: str
    state: str
    size_gb: int
    region: str
    zone: str
    encrypted: bool
    attached_machine_id: str | None
    attached_alloc_id: str | None
    created_at: str
    host_status: Literal["ok", "unknown", "unreachable"]
    fstype: str
    snapshot_retention: int
    auto_backup_enabled: bool
    type: str
    block_size: int | None = None
    blocks: int | None = None
    blocks_free: int | None = None
    blocks_avail: int | None = None
    bytes_total: int | None = None
    bytes_used: int | None = None
    error: str | None = None


class ExtendedVolume(Body):
    needs_restart: bool
    volume: Volume


class VolumeSnapshot(Body):
    id: str
    size: int
    volume_size: int
    digest: str
    created_at: str
    status: str
    retention_days: int


# -- across an organization --------------------------------------------------------------


class MachineOverview(Body):
    image: str
    guest: dict[str, object] | None = None
    metadata: dict[str, str] | None = None


class OrgMachine(Body):
    app_name: str
    id: str
    name: str
    state: str
    region: str
    private_ip: str
    version: str
    created_at: str
    updated_at: str
    config: MachineOverview | None = Field(None, description="Left out of summaries.")


class OrgMachines(Body):
    machines: list[OrgMachine]
    next_cursor: str | None = None
    last_machine_id: str | None = None
    last_updated_at: str | None = None


class OrgVolume(Volume):
    app_name: str
    updated_at: str


class OrgVolumes(Body):
    volumes: list[OrgVolume]
    next_cursor: str | None = None
    last_volume_id: str | None = None
    last_updated_at: str | None = None


# -- hosts (roost's own) ----------------------------------------------------------------------


class HostCapacity(Body):
    cpus: int
    memory_mb: int
    disk_gb: int


class HostAllocated(Body):
    cpus: int
    memory_mb: int
    machines: int
    disk_gb: int


class HostMachine(Body):
    id: str
    app: str


class Host(Body):
    id: str
    region: str
    region_aliases: list[str]
    state: Literal["up", "down"]
    cordoned: bool
    epoch: int
    address: str
    proxy: str | None
    driver: str
    capacity: HostCapacity
    allocated: HostAllocated
    machines: list[HostMachine]
    registered_at: str
    lost_at: str


# -- the platform ---------------------------------------------------------------------------


class Region(Body):
    code: str
    name: str
    latitude: float | None = Field(None, description="Left out for a region with no place.")
    longitude: float | None = None
    geo_region: str
    gateway_available: bool
    requires_paid_plan: bool
    deprecated: bool


class Regions(Body):
    nearest: str
    regions: list[Region]
