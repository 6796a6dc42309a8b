"""Routes that reach into machines: logs (NDJSON, optionally followed), exec, ps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import StreamingResponse

from roost.agent.logs import LogRecord
from roost.api import responses as r
from roost.api.console import CLOSE_REFUSED, pump_console
from roost.api.docs import answers
from roost.api.errors import APIError, BadRequest, PreconditionFailed
from roost.api.machine_io import MachineIO, log_view
from roost.api.schemas import ExecRequest, Flag

router = APIRouter(prefix="/v1")
MAX_LOG_LINES = 10_000


def io(request: Request | WebSocket) -> MachineIO:
    service: MachineIO | None = request.app.state.services.io
    if service is None:
        raise PreconditionFailed("failed_precondition: this API cannot reach any machine host")
    return service


@router.get(
    "/apps/{app_name}/logs",
    tags=["Logs"],
    operation_id="Logs_app",
    response_model=None,
    responses=answers(
        r.LogLine, 412, media_type="application/x-ndjson", description="One JSON object per line."
    ),
)
async def app_logs(
    request: Request,
    app_name: str,
    machine: str | None = None,
    region: str | None = None,
    follow: Flag = False,
    since: str | None = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LOG_LINES)] = 100,
) -> StreamingResponse:
    """Logs of an app's machines as newline-delimited JSON, oldest first."""
    return await _logs(request, app_name, machine, region, follow, since, limit)


@router.get(
    "/apps/{app_name}/machines/{machine_id}/logs",
    tags=["Logs"],
    operation_id="Logs_machine",
    response_model=None,
    responses=answers(
        r.LogLine, 412, media_type="application/x-ndjson", description="One JSON object per line."
    ),
)
async def machine_logs(
    request: Request,
    app_name: str,
    machine_id: str,
    follow: Flag = False,
    since: str | None = None,
    limit: Annotated[int, Query(ge=0, le=MAX_LOG_LINES)] = 100,
) -> StreamingResponse:
    return await _logs(request, app_name, machine_id, None, follow, since, limit)


async def _logs(
    request: Request,
    app: str,
    machine: str | None,
    region: str | None,
    follow: bool,
    since: str | None,
    limit: int,
) -> StreamingResponse:
    service = io(request)
    regions = await service.machines_for_logs(app, machine, region)
    start = _since(since)

    async def lines() -> AsyncIterator[bytes]:
        records: Any = (
            service.follow_logs(regions, since=start, limit=limit)
            if follow
            else _iterate(await service.read_logs(regions, since=start, limit=limit))
        )
        async for record in records:
            yield json.dumps(log_view(record, app, regions)).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _iterate(records: list[LogRecord]) -> AsyncIterator[LogRecord]:
    for record in records:
        yield record


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(
            f"invalid_argument: since must be unix seconds or an RFC 3339 time, not {value!r}"
        ) from None


@router.get(
    "/apps/{app_name}/usage",
    tags=["Usage"],
    operation_id="Usage_app",
    response_model=None,
    responses=answers(r.Usage, 412),
)
async def app_usage(request: Request, app_name: str, since: str | None = None) -> dict[str, Any]:
    """Machine-seconds running (by size) and stopped, and bytes stored, for an app."""
    return await io(request).usage(app_name, since=_since(since))


@router.get(
    "/usage",
    tags=["Usage"],
    operation_id="Usage_all",
    response_model=None,
    responses=answers(r.Usage, 412),
)
async def all_usage(request: Request, since: str | None = None) -> dict[str, Any]:
    return await io(request).usage(None, since=_since(since))


@router.post(
    "/apps/{app_name}/machines/{machine_id}/exec",
    tags=["Machines"],
    operation_id="Machines_exec",
    response_model=None,
    responses=answers(r.ExecResult, 412),
)
async def machine_exec(
    request: Request, app_name: str, machine_id: str, body: ExecRequest
) -> dict[str, Any]:
    return await io(request).exec(
        app_name,
        machine_id,
        cmd=body.cmd,
        command=body.command,
        stdin=body.stdin,
        timeout=body.timeout,
    )


@router.get(
    "/apps/{app_name}/machines/{machine_id}/ps",
    tags=["Machines"],
    operation_id="Machines_list_processes",
    response_model=None,
    responses=answers(list[r.ProcessStat], 412),
)
async def machine_ps(
    request: Request,
    app_name: str,
    machine_id: str,
    sort_by: str | None = None,
    order: str | None = None,
) -> list[dict[str, Any]]:
    return await io(request).processes(app_name, machine_id, sort_by=sort_by, order=order)


@router.websocket("/apps/{app_name}/machines/{machine_id}/console")
async def machine_console(
    websocket: WebSocket,
    app_name: str,
    machine_id: str,
    cols: int = 80,
    rows: int = 24,
    command: Annotated[list[str] | None, Query()] = None,
) -> None:
    """A terminal in a running machine.

    Binary messages carry terminal bytes both ways; the client sends JSON text
    ``{"resize": {"cols": C, "rows": R}}`` to resize; the server ends with the text
    ``{"exit_code": N}`` and closes.
    """
    try:
        terminal = await io(websocket).console(
            app_name, machine_id, command or [], cols=cols, rows=rows
        )
    except APIError as exc:
        # Accepted only to be closed with the reason: a refused handshake says nothing.
        await websocket.accept()
        await websocket.close(code=CLOSE_REFUSED, reason=exc.message[:120])
        return
    await websocket.accept()
    try:
        await pump_console(websocket, terminal)
    finally:
        terminal.close()
