"""The services the routes call, built once per server."""

from __future__ import annotations

from dataclasses import dataclass, field

from roost.api.apps import Apps
from roost.api.auth import Authenticator
from roost.api.hosts import Hosts
from roost.api.machine_io import MachineIO
from roost.api.machines import Machines
from roost.api.orgs import Orgs
from roost.api.volumes import Volumes
from roost.metrics import Registry


@dataclass(frozen=True, slots=True)
class Services:
    apps: Apps
    machines: Machines
    auth: Authenticator
    io: MachineIO | None = None
    """Calls into running machines; None where no host can be reached (unit tests)."""
    metrics: Registry = field(default_factory=Registry)
    """Served at /metrics; the server adds its agent's metrics to it."""
    hosts: Hosts | None = None
    volumes: Volumes | None = None
    orgs: Orgs | None = None
