"""Per-machine network namespaces: ``<prefix><machine id>`` with an ``eth0`` on the bridge.

Inside: ``lo`` up, ``eth0`` with the machine's IPv4 and IPv6 addresses (``nodad``, so
IPv6 works at once) and default routes via the bridge's gateways. The host end of the
veth pair is named from a hash of the netns name (15-character limit) and carries the
netns name as its alias. Deleting the netns deletes the veth pair with it (the kernel
does that asynchronously, a few ms later; ``create`` copes with a stale one).
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

from roost.net.ipam import MachineAddressing
from roost.net.iproute import NetworkError, ip_batch

NETNS_DIR = Path("/run/netns")


def host_veth_name(netns_name: str) -> str:
    """``h`` + 14 hex digits (56 bits) of a hash: 15 characters, the kernel's limit."""
    return "h" + hashlib.blake2b(netns_name.encode(), digest_size=7).hexdigest()


def link_exists(name: str) -> bool:
    """In this process's network namespace. Not /sys/class/net: that shows the netns
    /sys was mounted in, which is not ours when an agent runs under ``nsenter --net``."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


@dataclass(slots=True)
class MachineNetworks:
    bridge: str
    addressing: MachineAddressing
    netns_prefix: str = "rst-"

    def netns_name(self, machine_id: str) -> str:
        return f"{self.netns_prefix}{machine_id}"

    def netns_path(self, machine_id: str) -> Path:
        return NETNS_DIR / self.netns_name(machine_id)

    def exists(self, machine_id: str) -> bool:
        return self.netns_path(machine_id).exists()

    async def create(self, machine_id: str, index: int) -> Path:
        """The machine's netns, configured for address ``index``. Idempotent: an existing
        netns is returned as it is."""
        name = self.netns_name(machine_id)
        path = self.netns_path(machine_id)
        if path.exists():
            return path
        addr = self.addressing.address(index)
        a = self.addressing
        veth = host_veth_name(name)
        if link_exists(veth):
            # Left by a netns deleted just before: the kernel destroys those (and their
            # veths) asynchronously. It may vanish meanwhile, hence force.
            await ip_batch([f"link del {veth}"], force=True)
        try:
            await ip_batch(
                [
                    f"netns add {name}",
                    f"link add {veth} type veth peer name eth0 netns {name}",
                    f"link set {veth} master {self.bridge} alias {name} up",
                ]
            )
            await ip_batch(
                [
                    f"addr add {addr.v4}/{a.v4.prefixlen} dev eth0",
                    f"addr add {addr.v6}/{a.v6.prefixlen} dev eth0 nodad",
                    "link set lo up",
                    "link set eth0 up",
                    f"route add default via {a.gateway_v4}",
                    f"route add default via {a.gateway_v6}",
                ],
                netns=name,
            )
        except NetworkError:
            await self._remove(name, veth)
            raise
        return path

    async def delete(self, machine_id: str) -> None:
        """Remove the netns (and so its veth pair). Idempotent."""
        name = self.netns_name(machine_id)
        if self.netns_path(machine_id).exists():
            await ip_batch([f"netns del {name}"])

    async def _remove(self, name: str, veth: str) -> None:
        # The veth goes with the netns, unless creating the netns was what failed.
        await ip_batch([f"netns del {name}", f"link del {veth}"], force=True)
