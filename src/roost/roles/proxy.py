"""``roost proxy``: the proxy as a process of its own.

Beside a ``roost server`` it follows the server's store file (the SQLite store notices
the server's commits) and asks the server's API to start and stop machines, like any
client. In a fleet it is one host's proxy over the fleet's store: it starts and stops
machines by writing desired state to the store the way the API does (the same
``Machines`` code, so leases and events are the same), so autostart keeps working
while every API process is down.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from roost.api.machines import Machines
from roost.api.placement import Placement
from roost.net.ipam import MachineAddressing
from roost.proxy.control import LocalControl, RemoteControl
from roost.proxy.server import Proxy, ProxyConfig
from roost.roles.serving import RoleError, until_signalled
from roost.store import StoreError
from roost.store.sqlite import SqliteStore
from roost.store.url import open_store


async def serve_beside_server(
    data_dir: Path, api_url: str, token: str, config: ProxyConfig
) -> None:
    path = data_dir / "store.db"
    if not path.exists():
        raise RoleError(f"no roost store at {path}: point --data-dir at a server's data dir")
    async with contextlib.AsyncExitStack() as stack:
        # Lease expiry belongs to the server; this process only reads.
        store = await SqliteStore.open(path, reaper=False, follow=True)
        stack.push_async_callback(store.close)
        control = RemoteControl(api_url, token)
        stack.push_async_callback(control.aclose)
        proxy = Proxy(store, control, config)
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        await until_signalled()


async def serve_in_fleet(
    store_url: str, config: ProxyConfig, addressing: MachineAddressing
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await open_store(store_url)
        except StoreError as exc:
            raise RoleError(str(exc)) from None
        stack.push_async_callback(store.close)
        machines = Machines(store, Placement(store), addressing, region=config.region)
        proxy = Proxy(store, LocalControl(machines), config)
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        await until_signalled()
