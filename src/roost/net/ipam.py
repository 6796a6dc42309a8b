"""Machine addresses on a host: allocation index <-> (IPv4, IPv6). Pure, no I/O.

Index 1 is the gateway (the host's bridge); machines get indexes from 2 on. Which
index a machine holds is recorded elsewhere (the store); this only does the arithmetic,
so a machine keeps the same pair of addresses for as long as it keeps its index.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

GATEWAY_INDEX = 1
FIRST_INDEX = 2


@dataclass(frozen=True, slots=True)
class MachineAddress:
    index: int
    v4: IPv4Address
    v6: IPv6Address


@dataclass(frozen=True, slots=True)
class MachineAddressing:
    v4_subnet: str = "172.30.0.0/17"
    v6_subnet: str = "fdaa:0:1::/64"
    v4: IPv4Network = field(init=False, repr=False, compare=False)
    v6: IPv6Network = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v4 = ipaddress.ip_network(self.v4_subnet)
        v6 = ipaddress.ip_network(self.v6_subnet)
        if not isinstance(v4, IPv4Network) or not isinstance(v6, IPv6Network):
            raise ValueError(f"need an IPv4 and an IPv6 subnet, got {v4} and {v6}")
        if v4.num_addresses < 4:
            raise ValueError(f"{v4} has no room for machines")
        object.__setattr__(self, "v4", v4)
        object.__setattr__(self, "v6", v6)

    @property
    def last_index(self) -> int:
        # IPv4's last address is the broadcast one; the network address is index 0.
        return min(self.v4.num_addresses - 2, self.v6.num_addresses - 1)

    @property
    def capacity(self) -> int:
        """How many machines fit."""
        return self.last_index - FIRST_INDEX + 1

    @property
    def gateway_v4(self) -> IPv4Address:
        return self.v4.network_address + GATEWAY_INDEX

    @property
    def gateway_v6(self) -> IPv6Address:
        return self.v6.network_address + GATEWAY_INDEX

    def address(self, index: int) -> MachineAddress:
        if not FIRST_INDEX <= index <= self.last_index:
            raise ValueError(f"index {index} outside {FIRST_INDEX}..{self.last_index}")
        return MachineAddress(
            index, self.v4.network_address + index, self.v6.network_address + index
        )

    def index_of(self, address: str | IPv4Address | IPv6Address) -> int:
        """The index a machine address was derived from (either family)."""
        addr = ipaddress.ip_address(address)
        net: IPv4Network | IPv6Network = self.v4 if addr.version == 4 else self.v6
        if addr not in net:
            raise ValueError(f"{addr} is not in {net}")
        index = int(addr) - int(net.network_address)
        if not FIRST_INDEX <= index <= self.last_index:
            raise ValueError(f"{addr} is not a machine address")
        return index
