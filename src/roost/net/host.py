"""The host side of machine networking: one bridge holding the machines' gateways.

Addresses of machine ranges without a local route would follow the root netns's
default route off the host, so ``unreachable`` routes for the whole machine ranges are
installed before anything else and removed last. IP forwarding stays off in the root
netns: machines talk to the host (and to each other over the bridge), nothing more.

A bridge and its machine ranges belong to one server's data dir, named in the bridge's
link alias. A second server on another data dir that asks for the same bridge, or for a
range another bridge already routes, is refused: two servers handing out the same
addresses would give two machines one address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from roost.net.ipam import MachineAddressing
from roost.net.iproute import NetworkError, ip_batch, ip_json
from roost.net.machine import link_exists


@dataclass(slots=True)
class HostNetwork:
    bridge: str = "rst0"
    addressing: MachineAddressing = field(default_factory=MachineAddressing)
    unreachable_v4: str = "172.30.0.0/16"
    unreachable_v6: str = "fdaa::/16"
    owner: str = ""
    """Who the bridge belongs to (the server's data dir); empty: anyone."""

    def __post_init__(self) -> None:
        if not 0 < len(self.bridge) <= 15:
            raise ValueError(f"bad interface name {self.bridge!r}")
        if any(c in self.owner for c in '"\\\n'):
            raise ValueError(f"the data dir {self.owner!r} may not contain quotes or newlines")
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
        await self._check_ownership()
        commands = [
            f"route replace unreachable {self.unreachable_v4}",
            f"route replace unreachable {self.unreachable_v6}",
        ]
        if not self.bridge_exists():
            commands.append(f"link add {self.bridge} type bridge")
        if self.owner:
            commands.append(f'link set {self.bridge} alias "{_alias(self.owner)}"')
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

    async def _check_ownership(self) -> None:
        if not self.owner:
            return
        advice = (
            "give this server its own --bridge, --v4-subnet and --v6-subnet, "
            "or stop the other server and remove its bridge"
        )
        for link in await ip_json(["link", "show", "dev", self.bridge]):
            alias = str(link.get("ifalias", ""))
            if alias.startswith(ALIAS_PREFIX) and alias != _alias(self.owner):
                raise NetworkError(
                    f"bridge {self.bridge} belongs to the roost server on "
                    f"{alias.removeprefix(ALIAS_PREFIX)}; {advice}"
                )
        for net in (self.addressing.v4, self.addressing.v6):
            family = "-6" if net.version == 6 else "-4"
            for route in await ip_json([family, "route", "show", "exact", str(net)]):
                device = route.get("dev")
                if device and device != self.bridge:
                    raise NetworkError(
                        f"machine range {net} is already routed to {device} "
                        f"(another roost server?); {advice}"
                    )

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


ALIAS_PREFIX = "roost data-dir="


def _alias(owner: str) -> str:
    return f"{ALIAS_PREFIX}{owner}"
