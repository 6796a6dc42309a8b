"""Routes for the fleet's hosts (roost's own, not part of Fly's Machines API)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from roost.api.errors import NotFound
from roost.api.hosts import Hosts

router = APIRouter(prefix="/v1/hosts", tags=["Hosts"])


def hosts(request: Request) -> Hosts:
    found: Hosts | None = request.app.state.services.hosts
    if found is None:
        raise NotFound("this API serves no fleet")
    return found


@router.get("")
async def hosts_list(request: Request) -> list[dict[str, Any]]:
    return await hosts(request).list()


@router.get("/{host_id}")
async def hosts_show(request: Request, host_id: str) -> dict[str, Any]:
    return await hosts(request).get(host_id)


@router.post("/{host_id}/cordon")
async def hosts_cordon(request: Request, host_id: str) -> dict[str, Any]:
    return await hosts(request).cordon(host_id, True)


@router.post("/{host_id}/uncordon")
async def hosts_uncordon(request: Request, host_id: str) -> dict[str, Any]:
    return await hosts(request).cordon(host_id, False)


@router.post("/{host_id}/isolate")
async def hosts_isolate(request: Request, host_id: str) -> dict[str, Any]:
    """Drill: cut the host off from the fleet (its machines keep running)."""
    return await hosts(request).isolate(host_id)


@router.post("/{host_id}/restore")
async def hosts_restore(request: Request, host_id: str) -> dict[str, Any]:
    """Drill: let an isolated host join again."""
    return await hosts(request).restore(host_id)
