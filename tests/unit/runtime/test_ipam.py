from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from roost.net.ipam import FIRST_INDEX, MachineAddressing


def test_defaults_map_index_to_both_families() -> None:
    a = MachineAddressing()
    assert a.gateway_v4 == IPv4Address("172.30.0.1")
    assert a.gateway_v6 == IPv6Address("fdaa:0:1::1")
    first = a.address(FIRST_INDEX)
    assert (first.v4, first.v6) == (IPv4Address("172.30.0.2"), IPv6Address("fdaa:0:1::2"))
    m = a.address(300)
    assert (m.v4, m.v6) == (IPv4Address("172.30.1.44"), IPv6Address("fdaa:0:1::12c"))


def test_capacity_excludes_network_gateway_and_broadcast() -> None:
    a = MachineAddressing()
    assert a.capacity == 2**15 - 3
    assert a.address(a.last_index).v4 == IPv4Address("172.30.127.254")
    small = MachineAddressing("10.0.0.0/29", "fd00::/120")
    assert small.capacity == 5
    assert [small.address(i).v4.packed[-1] for i in range(2, 7)] == [2, 3, 4, 5, 6]


def test_smaller_v6_subnet_bounds_capacity() -> None:
    assert MachineAddressing("10.0.0.0/24", "fd00::/124").capacity == 14


@pytest.mark.parametrize("index", [-1, 0, 1, 2**15 - 1, 2**15])
def test_out_of_range_index(index: int) -> None:
    with pytest.raises(ValueError):
        MachineAddressing().address(index)


def test_index_of_round_trips() -> None:
    a = MachineAddressing()
    for index in (2, 77, a.last_index):
        m = a.address(index)
        assert a.index_of(m.v4) == a.index_of(str(m.v6)) == index


@pytest.mark.parametrize("addr", ["172.30.0.1", "172.30.127.255", "10.0.0.5", "fdaa:0:2::5"])
def test_index_of_rejects_non_machine_addresses(addr: str) -> None:
    with pytest.raises(ValueError):
        MachineAddressing().index_of(addr)


def test_rejects_swapped_or_tiny_subnets() -> None:
    with pytest.raises(ValueError):
        MachineAddressing("fdaa:0:1::/64", "172.30.0.0/17")
    with pytest.raises(ValueError):
        MachineAddressing("10.0.0.0/31", "fd00::/64")
