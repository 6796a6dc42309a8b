"""``roost proxy`` in a fleet: one host's proxy, over the fleet's store.

It routes from the store's catalog and starts and stops machines by writing desired
state to the store the way the API does (the same ``Machines`` code, so leases and
events are the same), so autostart keeps working while every API process is down.
"""

from __future__ import annotations

import contextlib
import logging

from roost.api.machines import Machines
from roost.api.placement import Placement
from roost.net.ipam import MachineAddressing
from roost.proxy.control import LocalControl
from roost.proxy.server import Proxy, ProxyConfig
from roost.roles.serving import RoleError, until_signalled
from roost.store import StoreError
from roost.store.url import open_store

log = logging.getLogger("roost.proxy")


async def serve_proxy(store_url: str, config: ProxyConfig, addressing: MachineAddressing) -> None:
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
