"""Across an organization's apps: its machines and volumes (Fly's ``/v1/orgs/{org}/...``),
and the platform's regions (``/v1/platform/regions``).

Org lists come oldest change first (``updated_at``, then id) and page with an opaque
cursor: the position of the last item handed out, so a page never repeats one.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from roost.api.errors import BadRequest
from roost.api.machines import Machines
from roost.api.placement import Placement
from roost.api.volumes import Volumes
from roost.spec.regions import REGIONS
from roost.store import Store
from roost.store.records import App

MAX_PAGE = 1000
ORG_MACHINE = ("id", "name", "state", "region", "private_ip", "version", "created_at", "updated_at")
OVERVIEW = ("image", "guest", "metadata")


@dataclass(frozen=True, slots=True)
class OrgQuery:
    """The filters and paging of an org-wide list, as Fly's API takes them."""

    include_deleted: bool = False
    region: str | None = None
    states: tuple[str, ...] = ()
    summary: bool = False
    updated_after: str | None = None
    cursor: str | None = None
    limit: int | None = None


class Orgs:
    def __init__(
        self,
        store: Store,
        machines: Machines,
        volumes: Volumes | None,
        placement: Placement,
        *,
        region: str,
    ) -> None:
        self._store = store
        self._machines = machines
        self._volumes = volumes
        self._placement = placement
        self._region = region

    async def machines(self, org: str, query: OrgQuery) -> dict[str, Any]:
        found = []
        for app in await self._apps(org):
            for machine in await self._machines.list(
                app,
                region=query.region,
                states=query.states,
                include_deleted=query.include_deleted,
                summary=query.summary,
            ):
                item = {"app_name": app, **{k: machine[k] for k in ORG_MACHINE if k in machine}}
                if "config" in machine:
                    item["config"] = {
                        k: machine["config"][k] for k in OVERVIEW if k in machine["config"]
                    }
                found.append(item)
        return _page("machines", "last_machine_id", found, query)

    async def volumes(self, org: str, query: OrgQuery) -> dict[str, Any]:
        found = []
        if self._volumes is not None:
            for app in await self._apps(org):
                for volume in await self._volumes.list(app, summary=query.summary):
                    if volume["state"] == "destroying" and not query.include_deleted:
                        continue
                    if query.region and volume["region"] != query.region:
                        continue
                    if query.states and volume["state"] not in query.states:
                        continue
                    found.append({"app_name": app, "updated_at": volume["created_at"], **volume})
        return _page("volumes", "last_volume_id", found, query)

    async def regions(self) -> dict[str, Any]:
        """The regions this platform has hosts in, with Fly's facts where the name is a
        Fly region."""
        names = await self._placement.region_map()
        rows = []
        for code in sorted(set(names.regions.values()) | {self._region}):
            known = REGIONS.get(code)
            location = known.location if known else None
            row: dict[str, Any] = {
                "code": code,
                "name": known.city if known else code,
                "geo_region": known.geo if known else "",
                "gateway_available": False,
                "requires_paid_plan": False,
                "deprecated": False,
            }
            if location:
                row["latitude"], row["longitude"] = location
            rows.append(row)
        return {"nearest": self._region, "regions": rows}

    async def _apps(self, org: str) -> list[str]:
        apps = [App.from_json(kv.value) for kv in (await self._store.range("/apps/")).kvs]
        return [a.name for a in apps if a.org_slug == org]


def _page(kind: str, last_key: str, found: list[dict[str, Any]], query: OrgQuery) -> dict[str, Any]:
    found.sort(key=_order)
    if query.updated_after:
        after = _time(query.updated_after)
        found = [item for item in found if _time(item["updated_at"]) > after]
    if query.cursor:
        position = _position(query.cursor)
        found = [item for item in found if _order(item) > position]
    size = min(query.limit or MAX_PAGE, MAX_PAGE)
    page = found[:size]
    out: dict[str, Any] = {kind: page}
    if page:
        out[last_key] = page[-1]["id"]
        out["last_updated_at"] = page[-1]["updated_at"]
    if len(found) > size:
        out["next_cursor"] = _cursor(page[-1])
    return out


def _order(item: dict[str, Any]) -> tuple[str, str]:
    return item["updated_at"], item["id"]


def _cursor(item: dict[str, Any]) -> str:
    raw = f"{item['updated_at']}\n{item['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _position(cursor: str) -> tuple[str, str]:
    try:
        updated_at, _, item_id = base64.urlsafe_b64decode(cursor).decode().partition("\n")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("invalid_argument: cursor is not one this API handed out") from None
    return updated_at, item_id


def _time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"invalid_argument: {value!r} is not an RFC 3339 time") from None
