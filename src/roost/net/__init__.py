"""Machine networking: addresses, the host bridge, per-machine network namespaces."""

from roost.net.host import HostNetwork
from roost.net.ipam import MachineAddress, MachineAddressing
from roost.net.iproute import NetworkError
from roost.net.machine import MachineNetworks

__all__ = ["HostNetwork", "MachineAddress", "MachineAddressing", "MachineNetworks", "NetworkError"]
