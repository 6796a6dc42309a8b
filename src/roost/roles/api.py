"""The API's share of the platform: auth, apps, machines, and a link to the hosts.

Used by ``roost server`` (linked to its own agent in process) and by ``roost api``
(linked to every host's agent endpoint over HTTP).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from roost.api.app import create_app
from roost.api.apps import Apps
from roost.api.auth import Authenticator
from roost.api.machine_io import HostLink, MachineIO
from roost.api.machines import Machines
from roost.api.placement import Placement
from roost.api.services import Services
from roost.metrics import Registry
from roost.net.ipam import MachineAddressing
from roost.roles.serving import AsgiServer, serve_asgi
from roost.store import Store

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
        self.machines = Machines(store, Placement(store), addressing, region=region)
        self.services = Services(
            apps=Apps(store, self.machines),
            machines=self.machines,
            auth=self.auth,
            io=MachineIO(self.machines, link),
            metrics=metrics,
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
