"""The host side of machine networking: one bridge holding the machines' gateways.

Addresses of machine ranges without a local route would follow the root netns's
default route off the host, so ``unreachable`` routes for the whole machine ranges are
installed before anything else and removed last. IP forwarding stays off in the root
netns: machines talk to the host (and to each other over the bridge), nothing more.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from roost.net.ipam import MachineAddressing
from roost.net.iproute import NetworkError, ip_batch
from roost.net.machine import link_exists


@dataclass(slots=True)
class HostNetwork:
    bridge: str = "rst0"
    addressing: MachineAddressing = field(default_factory=MachineAddressing)
    unreachable_v4: str = "172.30.0.0/16"
    unreachable_v6: str = "fdaa::/16"

    def __post_init__(self) -> None:
        if not 0 < len(self.bridge) <= 15:
            raise ValueError(f"bad interface name {self.bridge!r}")
        for cover, net in (
            (self.unreachable_v4, self.addressing.v4),
            (self.unreachable_v6, self.addressing.v6),
        ):
            cover_net = ipaddress.ip_network(cover)
            if cover_net.version != net.version or not net.subnet_of(cover_net):  # type: ignore[arg-type]
                raise ValueError(f"unreachable range {cover} does not cover {net}")

    def bridge_exists(self) -> bool:
        return link_exists(self.bridge)

    async def setup(self) -> None:
        """Routes, bridge, gateway addresses, link up. Idempotent."""
        a = self.addressing
        commands = [
            f"route replace unreachable {self.unreachable_v4}",
            f"route replace unreachable {self.unreachable_v6}",
        ]
        if not self.bridge_exists():
            commands.append(f"link add {self.bridge} type bridge")
        commands += [
            f"addr replace {a.gateway_v4}/{a.v4.prefixlen} dev {self.bridge}",
            f"addr replace {a.gateway_v6}/{a.v6.prefixlen} dev {self.bridge} nodad",
            f"link set {self.bridge} up",
        ]
        try:
            await ip_batch(commands)
        except NetworkError:
            # A concurrent setup may have created the bridge between check and add.
            if not self.bridge_exists():
                raise
            await ip_batch([c for c in commands if not c.startswith("link add")])

    async def teardown(self) -> None:
        """Remove the bridge, then the routes. Idempotent."""
        await ip_batch(
            [
                f"link del {self.bridge}",
                f"route del unreachable {self.unreachable_v4}",
                f"route del unreachable {self.unreachable_v6}",
            ],
            force=True,
        )
        if self.bridge_exists():
            raise NetworkError(f"cannot remove bridge {self.bridge}")
