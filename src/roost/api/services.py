"""The services the routes call, built once per server."""

from __future__ import annotations

from dataclasses import dataclass

from roost.api.apps import Apps
from roost.api.auth import Authenticator
from roost.api.machine_io import MachineIO
from roost.api.machines import Machines


@dataclass(frozen=True, slots=True)
class Services:
    apps: Apps
    machines: Machines
    auth: Authenticator
    io: MachineIO | None = None
    """Calls into running machines; None where no host can be reached (unit tests)."""
