"""Routes for the fleet's hosts (roost's own, not part of Fly's Machines API)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from roost.api import responses as r
from roost.api.docs import answers
from roost.api.errors import NotFound
from roost.api.hosts import Hosts

router = APIRouter(prefix="/v1/hosts", tags=["Hosts"])


def hosts(request: Request) -> Hosts:
    found: Hosts | None = request.app.state.services.hosts
    if found is None:
        raise NotFound("this API serves no fleet")
    return found


@router.get("", operation_id="Hosts_list", response_model=None, responses=answers(list[r.Host]))
async def hosts_list(request: Request) -> list[dict[str, Any]]:
    return await hosts(request).list()


@router.get("/{host_id}", operation_id="Hosts_show", response_model=None, responses=answers(r.Host))
async def hosts_show(request: Request, host_id: str) -> dict[str, Any]:
    return await hosts(request).get(host_id)


@router.post(
    "/{host_id}/cordon",
    operation_id="Hosts_cordon",
    response_model=None,
    responses=answers(r.Host, 412),
)
async def hosts_cordon(request: Request, host_id: str) -> dict[str, Any]:
    return await hosts(request).cordon(host_id, True)


@router.post(
    "/{host_id}/uncordon",
    operation_id="Hosts_uncordon",
    response_model=None,
    responses=answers(r.Host, 412),
)
async def hosts_uncordon(request: Request, host_id: str) -> dict[str, Any]:
    return await hosts(request).cordon(host_id, False)


@router.post(
    "/{host_id}/isolate",
    operation_id="Hosts_isolate",
    response_model=None,
    responses=answers(r.Ok, 412),
)
async def hosts_isolate(request: Request, host_id: str) -> dict[str, Any]:
    """Drill: cut the host off from the fleet (its machines keep running)."""
    return await hosts(request).isolate(host_id)


@router.post(
    "/{host_id}/restore",
    operation_id="Hosts_restore",
    response_model=None,
    responses=answers(r.Ok, 412),
)
async def hosts_restore(request: Request, host_id: str) -> dict[str, Any]:
    """Drill: let an isolated host join again."""
    return await hosts(request).restore(host_id)
