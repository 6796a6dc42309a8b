"""What the platform keeps in the store, and where.

Key layout (every component reads these through the helpers below)::

    /apps/{app}                         App
    /machines/{app}/{id}                MachineRecord   desired state, written by the api
    /status/{app}/{id}                  MachineStatus   actual state, written by the agent
    /events/{app}/{id}/{event_id}       Event           newest last (ULID order)
    /versions/{app}/{id}/{version}      VersionRecord
    /leases/{app}/{id}                  LeaseRecord     machine lease (fly-machine-lease-nonce)
    /names/{app}/{name}                 machine id      machine names are unique per app
    /mids/{id}                          app name        machine ids are unique platform-wide
    /commands/{host}/{id}/{cmd_id}      Command         one-shot orders (signals) for an agent
    /hosts/{host}                       HostRecord
    /alive/{host}                       epoch           tiny key on a TTL lease: host liveness
    /proxies/{host}                     ProxyRecord     a host's proxy backhaul, on a TTL lease
    /cluster/secret                     token           what hosts show each other (backhaul,
                                                        agent endpoints); never leaves the fleet
    /controller                         holder          the elected controller, on a TTL lease
    /hostalloc/{host}                   Allocation      capacity reserved on a host
    /volumes/{app}/{vol_id}             VolumeRecord    a volume: written by the api (intent),
                                                        its host's agent (progress), both CAS
    /volsnaps/{vol_id}/{snap_id}        SnapshotRecord  a volume's snapshots; they outlive it
    /ipam/{index}                       machine id      private address allocations
    /tokens/{sha256}                    TokenRecord     API tokens, stored hashed

Records are plain dataclasses serialised as JSON; unknown fields are dropped when read
so older code tolerates newer records.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar

DesiredState = Literal["started", "stopped", "suspended", "destroyed"]
Action = Literal["launch", "start", "stop", "suspend", "restart", "update", "destroy"]

T = TypeVar("T", bound="Record")


class Record:
    """JSON (de)serialisation shared by every record type."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, text: str) -> Self:
        data: dict[str, Any] = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class App(Record):
    name: str
    id: str
    org_slug: str = "personal"
    network: str = "default"
    created_at: int = 0
    """Unix milliseconds."""
    idempotency_key: str = ""


@dataclass
class MachineRecord(Record):
    """A machine's desired state. Every user action bumps ``generation``; the agent
    applies each generation once, so a stop that already happened is not redone after
    a restart, and a natural exit is not undone by re-reading an old ``started``."""

    id: str
    app: str
    name: str
    region: str
    host_id: str
    config: dict[str, Any]
    version: str
    desired: DesiredState
    generation: int = 1
    action: Action = "launch"
    stop_signal: int | None = None
    stop_timeout: float | None = None
    cordoned: bool = False
    ip_index: int = 0
    private_ip: str = ""
    ipv4: str = ""
    created_at: str = ""
    updated_at: str = ""


@dataclass
class MachineStatus(Record):
    """A machine's actual state, as its agent last saw it."""

    state: str
    version: str
    generation: int = 0
    """The desired generation this state is the outcome of."""
    host_id: str = ""
    epoch: int = 0
    image_ref: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    last_exit: dict[str, Any] | None = None
    restart_count: int = 0
    event_id: str = ""
    """The newest event written with this status (ULIDs sort by time)."""
    updated_at: str = ""


@dataclass
class Event(Record):
    id: str
    type: str
    status: str
    source: Literal["user", "flyd"]
    timestamp: int
    """Unix milliseconds."""
    request: dict[str, Any] = field(default_factory=dict)
    """Fly's shape, only on exit events: ``{"exit_event": {...}, "restart_count": N}``."""
    message: str = ""
    """Why, in words: a failure's error, or what the platform did instead of what was
    asked."""

    def reason(self) -> str:
        # Events stored before ``message`` existed kept their words in ``request``.
        return self.message or str(self.request.get("error") or self.request.get("message") or "")


@dataclass
class VersionRecord(Record):
    version: str
    config: dict[str, Any]
    created_at: str = ""


@dataclass
class LeaseRecord(Record):
    nonce: str
    owner: str
    description: str
    expires_at: int
    """Unix seconds."""
    version: str = ""


@dataclass
class Command(Record):
    id: str
    type: Literal["signal"]
    signal: int = 0


@dataclass
class HostRecord(Record):
    id: str
    region: str
    region_aliases: list[str] = field(default_factory=list)
    """Other region names this host answers to in placement (e.g. Fly's ``iad``)."""
    address: str = ""
    """The agent's endpoint (``host:port``) for exec, logs, console and usage; empty
    when the API runs in the agent's process."""
    cpus: int = 0
    memory_mb: int = 0
    epoch: int = 1
    cordoned: bool = False
    driver: str = ""
    registered_at: str = ""
    lost_at: str = ""
    """When the controller last declared the host lost; cleared when it joins again."""
    disk_gb: int = 0
    """Room for volumes (GB); 0 = this host keeps no volumes."""
    online_resize: bool = False
    """Whether volumes grow while their machine runs (else at its next start)."""


@dataclass
class ProxyRecord(Record):
    host_id: str
    address: str
    """Where other hosts' proxies deliver this host's traffic (``host:port``)."""
    region: str = ""


@dataclass
class Allocation(Record):
    cpus: int = 0
    memory_mb: int = 0
    machines: int = 0
    disk_gb: int = 0
    """Reserved by volumes: their full size, though their image files are sparse."""


@dataclass
class VolumeRecord(Record):
    """A volume: an ext4 image file on one host. The API records intent (``creating``
    with its size, a bigger ``size_gb`` with ``extending``, ``destroying``, the attached
    machine); the host's agent carries it out and moves the state on (see
    ``roost.volumes.states``)."""

    id: str
    name: str
    app: str
    region: str
    host_id: str
    size_gb: int
    state: str = "creating"
    attached_machine_id: str | None = None
    fstype: str = "ext4"
    encrypted: bool = False
    zone: str = ""
    snapshot_retention: int = 5
    """Days a snapshot of this volume is kept."""
    auto_backup_enabled: bool = False
    snapshot_id: str = ""
    """The snapshot this volume is restored from (empty: a new, empty filesystem)."""
    created_at: str = ""
    error: str = ""
    """Why the volume ``failed``."""
    block_size: int = 0
    blocks: int = 0
    blocks_free: int = 0
    blocks_avail: int = 0
    """The filesystem's figures as its agent last read them (0 until then)."""


@dataclass
class SnapshotRecord(Record):
    """A point-in-time copy of a volume's image, kept as a file on ``host_id``."""

    id: str
    volume_id: str
    app: str
    host_id: str
    status: str = "pending"
    size: int = 0
    """Bytes of data the snapshot holds (its image file is sparse)."""
    volume_size: int = 0
    """The volume's size in bytes when taken; a restore needs at least this much."""
    digest: str = ""
    retention_days: int = 5
    created_at: str = ""
    error: str = ""


@dataclass
class TokenRecord(Record):
    id: str
    name: str
    role: Literal["admin"] = "admin"
    created_at: str = ""


def app_key(app: str) -> str:
    return f"/apps/{app}"


def machine_key(app: str, machine_id: str) -> str:
    return f"/machines/{app}/{machine_id}"


def machines_prefix(app: str | None = None) -> str:
    return f"/machines/{app}/" if app else "/machines/"


def status_key(app: str, machine_id: str) -> str:
    return f"/status/{app}/{machine_id}"


def status_prefix(app: str | None = None) -> str:
    return f"/status/{app}/" if app else "/status/"


def event_key(app: str, machine_id: str, event_id: str) -> str:
    return f"/events/{app}/{machine_id}/{event_id}"


def events_prefix(app: str, machine_id: str) -> str:
    return f"/events/{app}/{machine_id}/"


def version_key(app: str, machine_id: str, version: str) -> str:
    return f"/versions/{app}/{machine_id}/{version}"


def versions_prefix(app: str, machine_id: str) -> str:
    return f"/versions/{app}/{machine_id}/"


def lease_key(app: str, machine_id: str) -> str:
    return f"/leases/{app}/{machine_id}"


def name_key(app: str, name: str) -> str:
    return f"/names/{app}/{name}"


def mid_key(machine_id: str) -> str:
    return f"/mids/{machine_id}"


def command_key(host: str, machine_id: str, command_id: str) -> str:
    return f"/commands/{host}/{machine_id}/{command_id}"


def commands_prefix(host: str) -> str:
    return f"/commands/{host}/"


def host_key(host: str) -> str:
    return f"/hosts/{host}"


def alive_key(host: str) -> str:
    return f"/alive/{host}"


def proxy_key(host: str) -> str:
    return f"/proxies/{host}"


PROXIES_PREFIX = "/proxies/"
ALIVE_PREFIX = "/alive/"
HOSTS_PREFIX = "/hosts/"
HOSTALLOC_PREFIX = "/hostalloc/"
CLUSTER_SECRET_KEY = "/cluster/secret"
CONTROLLER_KEY = "/controller"


def hostalloc_key(host: str) -> str:
    return f"/hostalloc/{host}"


VOLUMES_PREFIX = "/volumes/"
SNAPSHOTS_PREFIX = "/volsnaps/"


def volume_key(app: str, volume_id: str) -> str:
    return f"/volumes/{app}/{volume_id}"


def volumes_prefix(app: str | None = None) -> str:
    return f"/volumes/{app}/" if app else VOLUMES_PREFIX


def snapshot_key(volume_id: str, snapshot_id: str) -> str:
    return f"/volsnaps/{volume_id}/{snapshot_id}"


def snapshots_prefix(volume_id: str | None = None) -> str:
    return f"/volsnaps/{volume_id}/" if volume_id else SNAPSHOTS_PREFIX


def ipam_key(index: int) -> str:
    # Zero-padded so key order is numeric order and the first gap is easy to find.
    return f"/ipam/{index:08d}"


IPAM_PREFIX = "/ipam/"


def token_key(digest: str) -> str:
    return f"/tokens/{digest}"


def parse_ipam_key(key: str) -> int:
    return int(key.removeprefix(IPAM_PREFIX))
