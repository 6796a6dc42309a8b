"""HTTP routes of the Machines API v1: parse the request, call a service, return JSON.

No logic lives here beyond reading Fly's parameter variants (``?kill=`` beside
``?force=``, repeated or comma-separated ``state``, lease ``?ttl=`` with no body).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from roost.api import responses as r
from roost.api.docs import answers
from roost.api.errors import BadRequest
from roost.api.leases import NONCE_HEADER
from roost.api.machines import Caller
from roost.api.schemas import (
    CreateAppRequest,
    CreateLeaseRequest,
    CreateMachineRequest,
    Flag,
    SignalRequest,
    StopRequest,
    UpdateMachineRequest,
    UpdateMetadataRequest,
    UpsertMetadataKeyRequest,
)
from roost.api.services import Services
from roost.spec.durations import parse_duration
from roost.spec.signals import STOP_SIGNAL_NAMES, parse_signal
from roost.spec.states import WAITABLE

router = APIRouter(prefix="/v1")

Nonce = Annotated[str | None, Header(alias=NONCE_HEADER)]
MAX_EVENTS = 50


def services(request: Request) -> Services:
    return request.app.state.services


def caller(request: Request) -> Caller:
    return request.state.caller


# -- apps ---------------------------------------------------------------------------------


@router.get(
    "/apps",
    tags=["Apps"],
    operation_id="Apps_list",
    response_model=None,
    responses=answers(r.AppList),
)
async def apps_list(
    request: Request,
    org_slug: str | None = None,
    app_role: str | None = None,
    limit: Annotated[int | None, Query(ge=1, le=5000)] = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    return await services(request).apps.list(
        org_slug, app_role=app_role, limit=limit, cursor=cursor
    )


@router.post(
    "/apps",
    status_code=201,
    tags=["Apps"],
    operation_id="Apps_create",
    response_model=None,
    responses=answers(r.CreatedApp, 422, status=201),
)
async def apps_create(request: Request, body: CreateAppRequest) -> dict[str, Any]:
    return await services(request).apps.create(body)


@router.get(
    "/apps/{app_name}",
    tags=["Apps"],
    operation_id="Apps_show",
    response_model=None,
    responses=answers(r.App),
)
async def apps_show(request: Request, app_name: str) -> dict[str, Any]:
    return await services(request).apps.get(app_name)


@router.delete(
    "/apps/{app_name}",
    status_code=202,
    response_class=Response,
    tags=["Apps"],
    operation_id="Apps_delete",
    response_model=None,
    responses=answers(None, 412),
)
async def apps_delete(request: Request, app_name: str, force: Flag = False) -> Response:
    await services(request).apps.delete(app_name, force=force)
    return Response(status_code=202)


# -- machines -----------------------------------------------------------------------------


@router.get(
    "/apps/{app_name}/machines",
    tags=["Machines"],
    operation_id="Machines_list",
    response_model=None,
    responses=answers(list[r.Machine]),
)
async def machines_list(
    request: Request,
    app_name: str,
    include_deleted: Flag = False,
    include_leases: Flag = False,
    region: str | None = None,
    state: Annotated[list[str] | None, Query()] = None,
    summary: Flag = False,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    cursor: str | None = None,
) -> JSONResponse:
    metadata = {
        key.removeprefix("metadata."): value
        for key, value in request.query_params.items()
        if key.startswith("metadata.")
    }
    machines = await services(request).machines.list(
        app_name,
        region=region,
        states=_split(state),
        metadata=metadata,
        include_deleted=include_deleted,
        include_leases=include_leases,
        summary=summary,
    )
    headers = {}
    if limit is not None:
        machines.sort(key=lambda m: m["id"])
        if cursor:
            machines = [m for m in machines if m["id"] > cursor]
        if len(machines) > limit:
            headers["fly-next-cursor"] = machines[limit - 1]["id"]
        machines = machines[:limit]
    return JSONResponse(machines, headers=headers)


@router.post(
    "/apps/{app_name}/machines",
    tags=["Machines"],
    operation_id="Machines_create",
    response_model=None,
    responses=answers(r.Machine, 409, 412),
)
async def machines_create(
    request: Request, app_name: str, body: CreateMachineRequest
) -> dict[str, Any]:
    return await services(request).machines.create(app_name, body, caller(request))


@router.get(
    "/apps/{app_name}/machines/{machine_id}",
    tags=["Machines"],
    operation_id="Machines_show",
    response_model=None,
    responses=answers(r.Machine),
)
async def machines_show(
    request: Request,
    app_name: str,
    machine_id: str,
    version: str | None = None,
    include_leases: Flag = False,
) -> dict[str, Any]:
    return await services(request).machines.get(
        app_name, machine_id, version=version, include_leases=include_leases
    )


@router.post(
    "/apps/{app_name}/machines/{machine_id}",
    tags=["Machines"],
    operation_id="Machines_update",
    response_model=None,
    responses=answers(r.Machine, 409, 412),
)
@router.put("/apps/{app_name}/machines/{machine_id}", include_in_schema=False)
async def machines_update(
    request: Request,
    app_name: str,
    machine_id: str,
    body: UpdateMachineRequest,
    nonce: Nonce = None,
) -> dict[str, Any]:
    return await services(request).machines.update(app_name, machine_id, body, nonce)


@router.delete(
    "/apps/{app_name}/machines/{machine_id}",
    tags=["Machines"],
    operation_id="Machines_delete",
    response_model=None,
    responses=answers(r.Ok, 409, 412),
)
async def machines_delete(
    request: Request,
    app_name: str,
    machine_id: str,
    force: Flag = False,
    kill: Flag = False,
    nonce: Nonce = None,
) -> dict[str, Any]:
    await services(request).machines.destroy(app_name, machine_id, nonce, force=force or kill)
    return {"ok": True}


@router.post(
    "/apps/{app_name}/machines/{machine_id}/start",
    tags=["Machines"],
    operation_id="Machines_start",
    response_model=None,
    responses=answers(r.Started, 409, 412),
)
async def machines_start(
    request: Request, app_name: str, machine_id: str, nonce: Nonce = None
) -> dict[str, Any]:
    return await services(request).machines.start(app_name, machine_id, nonce)


@router.post(
    "/apps/{app_name}/machines/{machine_id}/stop",
    tags=["Machines"],
    operation_id="Machines_stop",
    response_model=None,
    responses=answers(r.Ok, 409, 412),
)
async def machines_stop(
    request: Request,
    app_name: str,
    machine_id: str,
    body: Annotated[StopRequest | None, Body()] = None,
    nonce: Nonce = None,
) -> dict[str, Any]:
    stop = body or StopRequest()
    return await services(request).machines.stop(
        app_name, machine_id, nonce, signum=stop.signal, timeout=stop.timeout
    )


@router.post(
    "/apps/{app_name}/machines/{machine_id}/suspend",
    tags=["Machines"],
    operation_id="Machines_suspend",
    response_model=None,
    responses=answers(r.Ok, 409, 412),
)
async def machines_suspend(
    request: Request, app_name: str, machine_id: str, nonce: Nonce = None
) -> dict[str, Any]:
    return await services(request).machines.stop(app_name, machine_id, nonce, desired="suspended")


@router.post(
    "/apps/{app_name}/machines/{machine_id}/restart",
    tags=["Machines"],
    operation_id="Machines_restart",
    response_model=None,
    responses=answers(r.Ok, 409, 412),
)
async def machines_restart(
    request: Request,
    app_name: str,
    machine_id: str,
    timeout: str | None = None,
    signal: str | None = None,
    nonce: Nonce = None,
) -> dict[str, Any]:
    try:
        seconds = parse_duration(timeout) if timeout else None
        signum = parse_signal(signal, STOP_SIGNAL_NAMES) if signal else None
    except ValueError as exc:
        raise BadRequest(f"invalid_argument: {exc}") from None
    return await services(request).machines.restart(
        app_name, machine_id, nonce, signum=signum, timeout=seconds
    )


@router.post(
    "/apps/{app_name}/machines/{machine_id}/signal",
    tags=["Machines"],
    operation_id="Machines_signal",
    response_model=None,
    responses=answers(r.Ok, 412),
)
async def machines_signal(
    request: Request, app_name: str, machine_id: str, body: SignalRequest
) -> dict[str, Any]:
    await services(request).machines.signal(app_name, machine_id, body.signal)
    return {"ok": True}


@router.post(
    "/apps/{app_name}/machines/{machine_id}/cordon",
    tags=["Machines"],
    operation_id="Machines_cordon",
    response_model=None,
    responses=answers(r.Ok, 409, 412),
)
async def machines_cordon(
    request: Request, app_name: str, machine_id: str, nonce: Nonce = None
) -> dict[str, Any]:
    await services(request).machines.cordon(app_name, machine_id, nonce, True)
    return {"ok": True}


@router.post(
    "/apps/{app_name}/machines/{machine_id}/uncordon",
    tags=["Machines"],
    operation_id="Machines_uncordon",
    response_model=None,
    responses=answers(r.Ok, 409, 412),
)
async def machines_uncordon(
    request: Request, app_name: str, machine_id: str, nonce: Nonce = None
) -> dict[str, Any]:
    await services(request).machines.cordon(app_name, machine_id, nonce, False)
    return {"ok": True}


@router.get(
    "/apps/{app_name}/machines/{machine_id}/wait",
    tags=["Machines"],
    operation_id="Machines_wait",
    response_model=None,
    responses=answers(r.Waited, 408),
)
async def machines_wait(
    request: Request,
    app_name: str,
    machine_id: str,
    state: Annotated[list[str] | None, Query()] = None,
    timeout: str | None = None,
    version: str | None = None,
    instance_id: str | None = None,
    from_event_id: str | None = None,
) -> dict[str, Any]:
    states = _split(state) or ["started"]
    unknown = [s for s in states if s not in WAITABLE]
    if unknown:
        raise BadRequest(
            f"invalid_argument: cannot wait for state {unknown[0]!r}; "
            f"use one of {', '.join(sorted(WAITABLE))}"
        )
    seconds = 60
    if timeout is not None:
        try:
            seconds = int(timeout)
        except ValueError:
            raise BadRequest("invalid_argument: timeout must be whole seconds") from None
        if not 1 <= seconds <= 60:
            raise BadRequest(
                "invalid_argument: timeout must be between 1 and 60 seconds; "
                "call wait again to wait longer"
            )
    return await services(request).machines.wait(
        app_name,
        machine_id,
        states=states,
        timeout=seconds,
        version=version or instance_id,
        from_event_id=from_event_id,
    )


@router.get(
    "/apps/{app_name}/machines/{machine_id}/events",
    tags=["Machines"],
    operation_id="Machines_list_events",
    response_model=None,
    responses=answers(list[r.MachineEvent]),
)
async def machines_events(
    request: Request, app_name: str, machine_id: str, limit: int = 20
) -> list[dict[str, Any]]:
    if limit < 1:
        raise BadRequest("invalid_argument: limit must be at least 1")
    return await services(request).machines.events(app_name, machine_id, min(limit, MAX_EVENTS))


@router.get(
    "/apps/{app_name}/machines/{machine_id}/versions",
    tags=["Machines"],
    operation_id="Machines_list_versions",
    response_model=None,
    responses=answers(list[r.MachineVersion]),
)
async def machines_versions(
    request: Request, app_name: str, machine_id: str
) -> list[dict[str, Any]]:
    return await services(request).machines.versions(app_name, machine_id)


# -- leases -------------------------------------------------------------------------------


@router.get(
    "/apps/{app_name}/machines/{machine_id}/lease",
    tags=["Machines"],
    operation_id="Machines_show_lease",
    response_model=None,
    responses=answers(r.LeaseEnvelope),
)
async def lease_show(request: Request, app_name: str, machine_id: str) -> dict[str, Any]:
    return await services(request).machines.lease_get(app_name, machine_id)


@router.post(
    "/apps/{app_name}/machines/{machine_id}/lease",
    status_code=201,
    tags=["Machines"],
    operation_id="Machines_create_lease",
    response_model=None,
    responses=answers(r.LeaseEnvelope, 409, status=201),
)
async def lease_create(
    request: Request,
    app_name: str,
    machine_id: str,
    body: Annotated[CreateLeaseRequest | None, Body()] = None,
    ttl: Annotated[int | None, Query(ge=1, le=3600)] = None,
    nonce: Nonce = None,
) -> dict[str, Any]:
    lease = body or CreateLeaseRequest()
    return await services(request).machines.lease_acquire(
        app_name,
        machine_id,
        caller(request),
        ttl=lease.ttl or ttl,
        description=lease.description,
        nonce=nonce,
    )


@router.delete(
    "/apps/{app_name}/machines/{machine_id}/lease",
    tags=["Machines"],
    operation_id="Machines_release_lease",
    response_model=None,
    responses=answers(r.ReleasedEnvelope, 409),
)
async def lease_release(
    request: Request, app_name: str, machine_id: str, nonce: Nonce = None
) -> dict[str, Any]:
    return await services(request).machines.lease_release(app_name, machine_id, nonce)


# -- metadata -----------------------------------------------------------------------------


@router.get(
    "/apps/{app_name}/machines/{machine_id}/metadata",
    tags=["Machines"],
    operation_id="Machines_show_metadata",
    response_model=None,
    responses=answers(dict[str, str]),
)
async def metadata_show(request: Request, app_name: str, machine_id: str) -> dict[str, str]:
    return await services(request).machines.metadata_get(app_name, machine_id)


@router.patch(
    "/apps/{app_name}/machines/{machine_id}/metadata",
    status_code=204,
    response_class=Response,
    tags=["Machines"],
    operation_id="Machines_update_metadata",
    responses=answers(None, 409, 412),
)
@router.put(
    "/apps/{app_name}/machines/{machine_id}/metadata",
    status_code=204,
    response_class=Response,
    tags=["Machines"],
    operation_id="Machines_update_metadata_deprecated",
    responses=answers(None, 409, 412),
)
async def metadata_update(
    request: Request, app_name: str, machine_id: str, body: UpdateMetadataRequest
) -> Response:
    await services(request).machines.metadata_update(
        app_name, machine_id, body.metadata, body.machine_version
    )
    return Response(status_code=204)


@router.get(
    "/apps/{app_name}/machines/{machine_id}/metadata/{key}",
    tags=["Machines"],
    operation_id="Machines_get_metadata_key",
    response_model=None,
    responses=answers(r.MetadataValue),
)
async def metadata_key_show(
    request: Request, app_name: str, machine_id: str, key: str
) -> dict[str, str]:
    return await services(request).machines.metadata_get_key(app_name, machine_id, key)


@router.post(
    "/apps/{app_name}/machines/{machine_id}/metadata/{key}",
    status_code=204,
    response_class=Response,
    tags=["Machines"],
    operation_id="Machines_upsert_metadata",
    responses=answers(None, 409),
)
async def metadata_key_upsert(
    request: Request, app_name: str, machine_id: str, key: str, body: UpsertMetadataKeyRequest
) -> Response:
    await services(request).machines.metadata_update(app_name, machine_id, {key: body.value}, None)
    return Response(status_code=204)


@router.delete(
    "/apps/{app_name}/machines/{machine_id}/metadata/{key}",
    status_code=204,
    response_class=Response,
    tags=["Machines"],
    operation_id="Machines_delete_metadata",
    responses=answers(None, 409),
)
async def metadata_key_delete(
    request: Request, app_name: str, machine_id: str, key: str
) -> Response:
    await services(request).machines.metadata_update(app_name, machine_id, {key: None}, None)
    return Response(status_code=204)


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for v in values or [] for part in v.split(",") if part.strip()]
