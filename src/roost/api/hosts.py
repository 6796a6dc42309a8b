"""The fleet's hosts as operators see them: registration, liveness, capacity, proxies;
cordoning; and the isolation drills use (roost's own API, beside Fly's)."""

from __future__ import annotations

import dataclasses
from typing import Any

from roost.api.errors import NotFound, PreconditionFailed
from roost.api.machine_io import HostLink
from roost.cluster import alive_hosts
from roost.runtime.base import DriverError
from roost.store import Compare, Put, Store
from roost.store.records import (
    HOSTALLOC_PREFIX,
    HOSTS_PREFIX,
    PROXIES_PREFIX,
    Allocation,
    HostRecord,
    MachineRecord,
    ProxyRecord,
    host_key,
    machines_prefix,
)

CAS_ATTEMPTS = 5


class HostNotFound(NotFound):
    def __init__(self, host_id: str) -> None:
        super().__init__(f"host not found: {host_id}; `roost hosts list` shows the fleet")


class Hosts:
    def __init__(self, store: Store, link: HostLink) -> None:
        self._store = store
        self._link = link

    async def list(self) -> list[dict[str, Any]]:
        alive = await alive_hosts(self._store)
        proxies = {
            kv.key.removeprefix(PROXIES_PREFIX): ProxyRecord.from_json(kv.value)
            for kv in (await self._store.range(PROXIES_PREFIX)).kvs
        }
        allocations = {
            kv.key.rsplit("/", 1)[1]: Allocation.from_json(kv.value)
            for kv in (await self._store.range(HOSTALLOC_PREFIX)).kvs
        }
        machines = await self._machines_by_host()
        out = []
        for kv in (await self._store.range(HOSTS_PREFIX)).kvs:
            host = HostRecord.from_json(kv.value)
            out.append(
                _view(
                    host,
                    host.id in alive,
                    allocations.get(host.id, Allocation()),
                    proxies.get(host.id),
                    machines.get(host.id, []),
                )
            )
        return out

    async def get(self, host_id: str) -> dict[str, Any]:
        for host in await self.list():
            if host["id"] == host_id:
                return host
        raise HostNotFound(host_id)

    async def cordon(self, host_id: str, cordoned: bool) -> dict[str, Any]:
        """A cordoned host keeps its machines but gets no new ones."""
        key = host_key(host_id)
        for _ in range(CAS_ATTEMPTS):
            kv = await self._store.get(key)
            if kv is None:
                raise HostNotFound(host_id)
            host = dataclasses.replace(HostRecord.from_json(kv.value), cordoned=cordoned)
            unchanged = [Compare.unchanged(kv, key)]
            if (await self._store.txn(unchanged, [Put(key, host.to_json())])).succeeded:
                return await self.get(host_id)
        raise PreconditionFailed("the host record kept changing; retry")

    async def isolate(self, host_id: str) -> dict[str, Any]:
        await self.get(host_id)
        await self._call(self._link.isolate, host_id)
        return {"ok": True}

    async def restore(self, host_id: str) -> dict[str, Any]:
        await self.get(host_id)
        await self._call(self._link.restore, host_id)
        return {"ok": True}

    async def _call(self, action: Any, host_id: str) -> None:
        try:
            await action(host_id)
        except DriverError as exc:
            raise PreconditionFailed(f"failed_precondition: {exc}") from None

    async def _machines_by_host(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for kv in (await self._store.range(machines_prefix())).kvs:
            record = MachineRecord.from_json(kv.value)
            if record.desired != "destroyed":
                out.setdefault(record.host_id, []).append({"id": record.id, "app": record.app})
        return out


def _view(
    host: HostRecord,
    alive: bool,
    allocation: Allocation,
    proxy: ProxyRecord | None,
    machines: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "id": host.id,
        "region": host.region,
        "region_aliases": host.region_aliases,
        "state": "up" if alive else "down",
        "cordoned": host.cordoned,
        "epoch": host.epoch,
        "address": host.address,
        "proxy": proxy.address if proxy else None,
        "driver": host.driver,
        "capacity": {"cpus": host.cpus, "memory_mb": host.memory_mb, "disk_gb": host.disk_gb},
        "allocated": {
            "cpus": allocation.cpus,
            "memory_mb": allocation.memory_mb,
            "machines": allocation.machines,
            "disk_gb": allocation.disk_gb,
        },
        "machines": machines,
        "registered_at": host.registered_at,
        "lost_at": host.lost_at,
    }
