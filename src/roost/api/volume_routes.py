"""HTTP routes of the Machines API v1 for volumes and their snapshots.

Fly's shapes: create answers 200 (not 201) with the volume, delete answers 200 with the
volume (here ``destroying``: its host removes it next), extend answers
``{needs_restart, volume}``, and lists take ``limit``/``cursor`` with the next cursor in
the ``fly-next-cursor`` header.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from roost.api import responses as r
from roost.api.docs import answers
from roost.api.errors import NotFound
from roost.api.schemas import CreateVolumeRequest, ExtendVolumeRequest, Flag, UpdateVolumeRequest
from roost.api.volumes import Volumes

router = APIRouter(prefix="/v1/apps/{app_name}/volumes", tags=["Volumes"])


def volumes(request: Request) -> Volumes:
    found: Volumes | None = request.app.state.services.volumes
    if found is None:
        raise NotFound("this API serves no volumes")
    return found


@router.get("", operation_id="Volumes_list", response_model=None, responses=answers(list[r.Volume]))
async def volumes_list(
    request: Request,
    app_name: str,
    summary: Flag = False,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    cursor: str | None = None,
) -> JSONResponse:
    found = await volumes(request).list(app_name, summary=summary)
    headers = {}
    if limit is not None:
        # Listed in id order, so the last id of a page is where the next one starts.
        if cursor:
            found = [v for v in found if v["id"] > cursor]
        if len(found) > limit:
            headers["fly-next-cursor"] = found[limit - 1]["id"]
        found = found[:limit]
    return JSONResponse(found, headers=headers)


@router.post(
    "", operation_id="Volumes_create", response_model=None, responses=answers(r.Volume, 409, 412)
)
async def volumes_create(
    request: Request, app_name: str, body: CreateVolumeRequest
) -> dict[str, Any]:
    return await volumes(request).create(app_name, body)


@router.get(
    "/{volume_id}",
    operation_id="Volumes_get_by_id",
    response_model=None,
    responses=answers(r.Volume),
)
async def volumes_show(request: Request, app_name: str, volume_id: str) -> dict[str, Any]:
    return await volumes(request).get(app_name, volume_id)


@router.put(
    "/{volume_id}",
    operation_id="Volumes_update",
    response_model=None,
    responses=answers(r.Volume, 409),
)
async def volumes_update(
    request: Request, app_name: str, volume_id: str, body: UpdateVolumeRequest
) -> dict[str, Any]:
    return await volumes(request).update(app_name, volume_id, body)


@router.delete(
    "/{volume_id}",
    operation_id="Volume_delete",
    response_model=None,
    responses=answers(r.Volume, 409, 412),
)
async def volumes_delete(request: Request, app_name: str, volume_id: str) -> dict[str, Any]:
    return await volumes(request).destroy(app_name, volume_id)


@router.put(
    "/{volume_id}/extend",
    operation_id="Volumes_extend",
    response_model=None,
    responses=answers(r.ExtendedVolume, 409, 412),
)
async def volumes_extend(
    request: Request, app_name: str, volume_id: str, body: ExtendVolumeRequest
) -> dict[str, Any]:
    return await volumes(request).extend(app_name, volume_id, body)


@router.get(
    "/{volume_id}/snapshots",
    operation_id="Volumes_list_snapshots",
    response_model=None,
    responses=answers(list[r.VolumeSnapshot]),
)
async def volumes_list_snapshots(
    request: Request, app_name: str, volume_id: str
) -> list[dict[str, Any]]:
    return await volumes(request).snapshots(app_name, volume_id)


@router.post(
    "/{volume_id}/snapshots",
    operation_id="createVolumeSnapshot",
    response_model=None,
    responses=answers(r.VolumeSnapshot, 409, 412),
)
async def volumes_create_snapshot(
    request: Request, app_name: str, volume_id: str
) -> dict[str, Any]:
    """Fly answers with an empty 200; the new snapshot (``pending``) is a harmless extra."""
    return await volumes(request).create_snapshot(app_name, volume_id)
