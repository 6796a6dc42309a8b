"""The services the routes call, built once per server."""

from __future__ import annotations

from dataclasses import dataclass

from roost.api.apps import Apps
from roost.api.auth import Authenticator
from roost.api.machines import Machines


@dataclass(frozen=True, slots=True)
class Services:
    apps: Apps
    machines: Machines
    auth: Authenticator
