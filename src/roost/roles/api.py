"""The API's share of the platform: auth, apps, machines, volumes, hosts, and a link to
them.

Used by ``roost server`` (linked to its own agent in process) and by ``roost api``
(linked to every host's agent endpoint over HTTP, and standing for election as the
fleet's controller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roost.api.app import create_app
from roost.api.apps import Apps
from roost.api.auth import Authenticator
from roost.api.hosts import Hosts
from roost.api.machine_io import HostLink, MachineIO
from roost.api.machines import Machines
from roost.api.orgs import Orgs
from roost.api.placement import Placement
from roost.api.remote import RemoteHosts
from roost.api.services import Services
from roost.api.volumes import Volumes
from roost.cluster import cluster_secret
from roost.controller.election import Election
from roost.controller.failover import Failover
from roost.metrics import Registry
from roost.net.ipam import MachineAddressing
from roost.roles.serving import AsgiServer, RoleError, serve_asgi, until_signalled
from roost.store import Store, StoreError
from roost.store.records import CONTROLLER_KEY
from roost.store.url import open_store

log = logging.getLogger("roost.api")

API_PORT = 4280
TOKEN_PREFIX = "/tokens/"


class ApiStack:
    def __init__(
        self,
        store: Store,
        link: HostLink,
        addressing: MachineAddressing,
        metrics: Registry,
        *,
        region: str,
    ) -> None:
        self.store = store
        self.auth = Authenticator(store, static_tokens=[os.environ.get("ROOST_API_TOKEN", "")])
        placement = Placement(store)
        self.machines = Machines(store, placement, addressing, region=region)
        self.volumes = Volumes(store, placement, region=region)
        self.services = Services(
            apps=Apps(store, self.machines, volumes=self.volumes),
            machines=self.machines,
            auth=self.auth,
            io=MachineIO(self.machines, link),
            metrics=metrics,
            hosts=Hosts(store, link),
            volumes=self.volumes,
            orgs=Orgs(store, self.machines, self.volumes, placement, region=region),
        )

    async def serve(self, listen: str, ready: Callable[[], bool]) -> AsgiServer:
        return await serve_asgi(
            create_app(self.services, ready=ready), listen, what="API", default_port=API_PORT
        )

    async def admin_token(self, data_dir: Path, *, first_only: bool = False) -> str | None:
        """The admin token kept in ``data_dir``, created (and printed once) if missing.

        With ``first_only`` (several API processes share one store) a token is created
        only if the store has none yet: later processes use the first one's.
        """
        path = data_dir / "admin-token"
        if path.exists():
            return path.read_text().strip()
        if first_only and (await self.store.range(TOKEN_PREFIX, limit=1)).kvs:
            return None
        token = await self.auth.create_token("admin")
        _save_secret(path, token)
        print(
            f"\nAdmin API token (shown once; also saved to {path}):\n\n    {token}\n",
            file=sys.stderr,
            flush=True,
        )
        return token


def _save_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    tmp.replace(path)


@dataclass
class ApiConfig:
    store: str
    """Store URL: ``etcd://host:port[,...]`` (a fleet) or ``sqlite:PATH``."""
    data_dir: Path
    listen: str = "127.0.0.1:4280"
    region: str = "local"
    """Where machines go when a create names no region (then anywhere)."""
    v4_subnet: str = "172.30.0.0/17"
    v6_subnet: str = "fdaa:0:1::/64"
    controller: bool = True


async def serve_api(config: ApiConfig) -> None:
    """``roost api``: the API (and a controller candidate) until SIGINT/SIGTERM."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await open_store(config.store)
        except StoreError as exc:
            raise RoleError(str(exc)) from None
        stack.push_async_callback(store.close)
        link = RemoteHosts(store, await cluster_secret(store))
        stack.push_async_callback(link.close)
        api = ApiStack(
            store,
            link,
            MachineAddressing(config.v4_subnet, config.v6_subnet),
            Registry(),
            region=config.region,
        )
        await api.admin_token(config.data_dir, first_only=True)
        server = await api.serve(config.listen, ready=lambda: True)
        stack.push_async_callback(server.close)
        if config.controller:
            holder = f"api@{socket.gethostname()}:{os.getpid()}"
            election = Election(store, CONTROLLER_KEY, holder)
            controller = asyncio.create_task(election.run(Failover(store).run))
            stack.push_async_callback(_cancel, controller)
        log.info("roost api ready on http://%s (store %s)", server.address, config.store)
        await until_signalled()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
