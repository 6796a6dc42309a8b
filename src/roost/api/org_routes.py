"""Routes across an organization's apps, and the platform's regions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from roost.api import responses as r
from roost.api.docs import answers
from roost.api.errors import NotFound
from roost.api.orgs import MAX_PAGE, OrgQuery, Orgs
from roost.api.schemas import Flag

router = APIRouter(prefix="/v1")


def orgs(request: Request) -> Orgs:
    found: Orgs | None = request.app.state.services.orgs
    if found is None:
        raise NotFound("this API serves no organizations")
    return found


def org_query(
    include_deleted: Flag = False,
    region: str | None = None,
    state: str | None = None,
    summary: Flag = False,
    updated_after: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
) -> OrgQuery:
    states = tuple(s.strip() for s in (state or "").split(",") if s.strip())
    return OrgQuery(include_deleted, region, states, summary, updated_after, cursor, limit)


Filters = Annotated[OrgQuery, Depends(org_query)]


@router.get(
    "/orgs/{org_slug}/machines",
    tags=["Machines"],
    operation_id="Machines_org_list",
    response_model=None,
    responses=answers(r.OrgMachines),
)
async def org_machines(request: Request, org_slug: str, query: Filters) -> dict[str, Any]:
    """The machines of every app in the organization, oldest change first."""
    return await orgs(request).machines(org_slug, query)


@router.get(
    "/orgs/{org_slug}/volumes",
    tags=["Volumes"],
    operation_id="Volumes_org_list",
    response_model=None,
    responses=answers(r.OrgVolumes),
)
async def org_volumes(request: Request, org_slug: str, query: Filters) -> dict[str, Any]:
    return await orgs(request).volumes(org_slug, query)


@router.get(
    "/platform/regions",
    tags=["Platform"],
    operation_id="Platform_regions_get",
    response_model=None,
    responses=answers(r.Regions),
)
async def platform_regions(request: Request) -> dict[str, Any]:
    """The regions this platform has hosts in; ``nearest`` is where machines go when a
    create names none."""
    return await orgs(request).regions()
