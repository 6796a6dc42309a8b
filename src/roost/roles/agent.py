"""``roost agent``: one host of a fleet — its machines, and the endpoint the API reaches
them through."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from roost.agent.endpoint import create_endpoint, serve_endpoint
from roost.cluster import cluster_secret
from roost.metrics import Registry
from roost.roles.host import HostConfig, HostStack, lock_data_dir
from roost.roles.serving import RoleError, until_signalled
from roost.store import StoreError
from roost.store.url import open_store

log = logging.getLogger("roost.agent")


@dataclass
class AgentConfig:
    store: str
    host: HostConfig
    listen: str = "0.0.0.0:4281"
    advertise: str = ""
    """The endpoint address the API dials; default: ``listen`` unless it is a wildcard."""


async def serve_agent(config: AgentConfig) -> None:
    """Until SIGINT/SIGTERM; machines keep running after, for the next agent to adopt."""
    advertise = config.advertise or config.listen
    if advertise.startswith(("0.0.0.0:", "[::]:")):
        raise RoleError(
            f"--listen {config.listen} is a wildcard: give --advertise HOST:PORT, the "
            "address the API can reach this agent at"
        )
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(lock_data_dir(config.host.data_dir))
        try:
            store = await open_store(config.store)
        except StoreError as exc:
            raise RoleError(str(exc)) from None
        stack.push_async_callback(store.close)
        config.host.endpoint = advertise
        host = await HostStack.start(config.host, store, Registry())
        stack.push_async_callback(host.close)
        endpoint = create_endpoint(
            host.link, await cluster_secret(store), snapshots=host.volume_files
        )
        server = await serve_endpoint(endpoint, config.listen)
        stack.push_async_callback(server.close)
        log.info(
            "roost agent ready: host %s in region %s, endpoint %s (epoch %d)",
            host.host.id,
            host.host.region,
            advertise,
            host.host.epoch,
        )
        await until_signalled()
