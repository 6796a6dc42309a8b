"""Apps: named groups of machines (and their volumes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from roost.api.errors import AppNotFound, BadRequest, NameTaken, PreconditionFailed
from roost.api.machines import ACTIVE_STATES, Machines
from roost.api.schemas import CreateAppRequest
from roost.api.views import app_view
from roost.api.volumes import Volumes
from roost.spec import ids
from roost.store import Compare, Put, Store
from roost.store.records import (
    App,
    MachineRecord,
    MachineStatus,
    app_key,
    machines_prefix,
    status_key,
)


class Apps:
    def __init__(
        self,
        store: Store,
        machines: Machines,
        *,
        volumes: Volumes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._machines = machines
        self._volumes = volumes
        self._clock = clock

    async def list(
        self,
        org_slug: str | None,
        *,
        app_role: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Apps by name; with ``limit``, a page of them and the cursor to the next.
        Apps here have no role (Fly's Postgres clusters and the like), so asking for
        one finds none."""
        apps = [App.from_json(kv.value) for kv in (await self._store.range("/apps/")).kvs]
        if org_slug:
            apps = [a for a in apps if a.org_slug == org_slug]
        if app_role:
            apps = []
        apps.sort(key=lambda a: a.name)
        total = len(apps)
        if cursor:
            apps = [a for a in apps if a.name > cursor]
        page = apps[:limit] if limit else apps
        out: dict[str, Any] = {
            "apps": [await self._view(a) for a in page],
            "total_apps": total,
        }
        if limit and len(apps) > limit:
            out["next_cursor"] = page[-1].name
        return out

    async def create(self, req: CreateAppRequest) -> dict[str, Any]:
        if not ids.is_app_name(req.name):
            raise BadRequest(
                f"invalid app name {req.name!r}: use 1-63 lowercase letters, digits and "
                "dashes, starting and ending with a letter or digit"
            )
        key = app_key(req.name)
        app = App(
            name=req.name,
            id=ids.app_id(),
            org_slug=req.org_slug,
            network=req.network or "default",
            created_at=int(self._clock() * 1000),
            idempotency_key=req.idempotency_key or "",
        )
        result = await self._store.txn([Compare.absent(key)], [Put(key, app.to_json())])
        if not result.succeeded:
            existing_kv = await self._store.get(key)
            if existing_kv is not None:
                existing = App.from_json(existing_kv.value)
                if req.idempotency_key and existing.idempotency_key == req.idempotency_key:
                    return {"id": existing.id, "created_at": existing.created_at}
            raise NameTaken(f"app name {req.name!r} is already taken; choose another name")
        return {"id": app.id, "created_at": app.created_at}

    async def get(self, name: str) -> dict[str, Any]:
        kv = await self._store.get(app_key(name))
        if kv is None:
            raise AppNotFound(name)
        return await self._view(App.from_json(kv.value))

    async def delete(self, name: str, *, force: bool) -> None:
        """Delete an app; its machines are destroyed (running ones only with force), and
        its volumes with them."""
        if await self._store.get(app_key(name)) is None:
            raise AppNotFound(name)
        live = await self._live_machines(name)
        active = [r.id for r, s in live if s and s.state in ACTIVE_STATES]
        if active and not force:
            raise PreconditionFailed(
                f"failed_precondition: app {name!r} has running machines "
                f"({', '.join(active)}); stop them first or delete with force=true"
            )
        for record, _ in live:
            await self._machines.destroy(name, record.id, None, force=True, lease_gated=False)
        if self._volumes is not None:
            await self._volumes.destroy_all(name)
        await self._store.delete(app_key(name))

    async def _live_machines(self, app: str) -> list[tuple[MachineRecord, MachineStatus | None]]:
        out = []
        for kv in (await self._store.range(machines_prefix(app))).kvs:
            record = MachineRecord.from_json(kv.value)
            if record.desired == "destroyed":
                continue
            status_kv = await self._store.get(status_key(app, record.id))
            out.append((record, MachineStatus.from_json(status_kv.value) if status_kv else None))
        return out

    async def _view(self, app: App) -> dict[str, Any]:
        machines = len(await self._live_machines(app.name))
        volumes = await self._volumes.count(app.name) if self._volumes is not None else 0
        return app_view(app, machines, volumes)
