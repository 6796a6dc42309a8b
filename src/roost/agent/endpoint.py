"""The agent's internal endpoint: how an API in another process reaches into this host's
machines.

In a fleet the API runs apart from the agents, so whatever it needs from inside a
machine (exec, processes, a console, logs, usage) it asks the agent of the machine's
host, here; ``roost.api.remote.RemoteHosts`` is the caller. Each route is one
``HostLink`` operation (``roost.api.machine_io``) of this host's ``LocalHost``. These
routes run commands in machines, so only callers showing the fleet's secret
(``roost.cluster``) are served.

Routes (JSON; bytes travel base64-encoded)::

    POST /internal/v1/machines/{id}/exec       {"argv", "timeout", "stdin"} → ExecResult
    GET  /internal/v1/machines/{id}/processes  → [process, ...]
    WS   /internal/v1/machines/{id}/console?cols=&rows=&argv=...   framing of roost.api.console
    GET  /internal/v1/machines/{id}/logs?since=&limit=             → [LogRecord, ...]
    WS   /internal/v1/logs/follow?machine=ID&machine=...   a LogRecord per text message
    GET  /internal/v1/usage?app=&since=&until=                     → [machine usage, ...]
    GET  /internal/v1/snapshots/{id}   a volume snapshot kept here, as a stream of its
                                       data (``roost.volumes.sparse``), for another host
                                       to restore it

Errors are ``{"error": "..."}``: 401 without the secret, 400 for bad parameters, 412 when
the driver refuses (unknown machine, not running), 404 for a snapshot not kept here. A
WebSocket refused before it opens gets the same status and body, as its handshake's HTTP
response.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import Base64Bytes, BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from roost.api.console import pump_console
from roost.cluster import HEADER, matches
from roost.roles.serving import AsgiServer, serve_asgi
from roost.runtime.base import DriverError
from roost.spec.ids import is_machine_id, is_snapshot_id
from roost.volumes.images import VolumeError

if TYPE_CHECKING:
    from roost.api.machine_io import HostLink, LogFeed

PREFIX = "/internal/v1"
ENDPOINT_PORT = 4281
GRACEFUL_SHUTDOWN = 5.0
"""Seconds a stopping agent lets calls in flight finish; a long exec is cut short."""

M = TypeVar("M", bound=BaseModel)


class _Invalid(Exception):
    """A parameter the caller got wrong: a 400."""


class _ExecBody(BaseModel):
    argv: list[str] = Field(min_length=1)
    timeout: float = Field(gt=0)
    stdin: Base64Bytes = b""


class _ConsoleQuery(BaseModel):
    argv: list[str] = Field(min_length=1)
    cols: int = Field(80, ge=1, le=1000)
    rows: int = Field(24, ge=1, le=1000)


class _LogsQuery(BaseModel):
    since: float | None = None
    limit: int = Field(0, ge=0)


class _UsageQuery(BaseModel):
    app: str | None = None
    since: float | None = None
    until: float | None = None


class SnapshotFiles(Protocol):
    def read_snapshot(self, snapshot_id: str) -> Iterator[bytes]:
        """The snapshot's stream; raises VolumeError if it is not kept here."""


def create_endpoint(
    link: HostLink, secret: str, *, snapshots: SnapshotFiles | None = None
) -> ASGIApp:
    """The endpoint's ASGI app, serving ``link`` (and the volume snapshots kept here) to
    callers that show ``secret``."""
    endpoint = _Endpoint(link, snapshots)
    machine = f"{PREFIX}/machines/{{id}}"
    return Starlette(
        routes=[
            Route(f"{machine}/exec", endpoint.exec, methods=["POST"]),
            Route(f"{machine}/processes", endpoint.processes),
            WebSocketRoute(f"{machine}/console", endpoint.console),
            Route(f"{machine}/logs", endpoint.read_logs),
            WebSocketRoute(f"{PREFIX}/logs/follow", endpoint.follow_logs),
            Route(f"{PREFIX}/usage", endpoint.usage),
            Route(f"{PREFIX}/snapshots/{{id}}", endpoint.snapshot),
            Route(f"{PREFIX}/hosts/{{host}}/isolate", endpoint.isolate, methods=["POST"]),
            Route(f"{PREFIX}/hosts/{{host}}/restore", endpoint.restore, methods=["POST"]),
        ],
        middleware=[Middleware(_RequireSecret, secret=secret)],
        exception_handlers={_Invalid: _error_handler, DriverError: _error_handler},
    )


class _Endpoint:
    def __init__(self, link: HostLink, snapshots: SnapshotFiles | None) -> None:
        self._link = link
        self._snapshots = snapshots

    async def exec(self, request: Request) -> JSONResponse:
        mid = _machine_id(request.path_params["id"])
        try:
            body = _ExecBody.model_validate_json(await request.body())
        except ValidationError as exc:
            raise _Invalid(_describe(exc)) from None
        result = await self._link.exec(mid, body.argv, timeout=body.timeout, stdin=body.stdin)
        return JSONResponse(
            {
                "exit_code": result.exit_code,
                "signal": result.signal,
                "timed_out": result.timed_out,
                "stdout": base64.b64encode(result.stdout).decode(),
                "stderr": base64.b64encode(result.stderr).decode(),
            }
        )

    async def isolate(self, request: Request) -> JSONResponse:
        await self._link.isolate(request.path_params["host"])
        return JSONResponse({"ok": True})

    async def restore(self, request: Request) -> JSONResponse:
        await self._link.restore(request.path_params["host"])
        return JSONResponse({"ok": True})

    async def processes(self, request: Request) -> JSONResponse:
        return JSONResponse(await self._link.processes(_machine_id(request.path_params["id"])))

    async def console(self, websocket: WebSocket) -> None:
        params = websocket.query_params
        try:
            mid = _machine_id(websocket.path_params["id"])
            query = _parse(_ConsoleQuery, {**params, "argv": params.getlist("argv")})
            terminal = await self._link.terminal(mid, query.argv, cols=query.cols, rows=query.rows)
        except (_Invalid, DriverError) as exc:
            await websocket.send_denial_response(_refusal(exc))
            return
        try:
            await websocket.accept()
            await pump_console(websocket, terminal)
        finally:
            terminal.close()

    async def read_logs(self, request: Request) -> JSONResponse:
        mid = _machine_id(request.path_params["id"])
        query = _parse(_LogsQuery, request.query_params)
        records = await self._link.read_logs(mid, since=query.since, limit=query.limit)
        return JSONResponse([dataclasses.asdict(r) for r in records])

    async def follow_logs(self, websocket: WebSocket) -> None:
        try:
            machines = {_machine_id(m) for m in websocket.query_params.getlist("machine")}
            if not machines:
                raise _Invalid("follow needs at least one machine=ID")
        except _Invalid as exc:
            await websocket.send_denial_response(_refusal(exc))
            return
        # Subscribed before the handshake completes: once the caller is connected, every
        # record written from then on reaches it.
        feed = self._link.subscribe_logs(machines)
        try:
            await websocket.accept()
            await _stream_records(websocket, feed)
        finally:
            feed.close()

    async def snapshot(self, request: Request) -> Response:
        snapshot_id = request.path_params["id"]
        if not is_snapshot_id(snapshot_id):
            raise _Invalid(f"{snapshot_id!r} is not a snapshot id (vs_ and 16 letters or digits)")
        try:
            if self._snapshots is None:
                raise VolumeError("this host keeps no volumes")
            stream = self._snapshots.read_snapshot(snapshot_id)
        except VolumeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        # A plain iterator: Starlette reads it in a worker thread, off the event loop.
        return StreamingResponse(stream, media_type="application/octet-stream")

    async def usage(self, request: Request) -> JSONResponse:
        query = _parse(_UsageQuery, request.query_params)
        rows = await self._link.usage(query.app, since=query.since, until=query.until)
        return JSONResponse(rows)


async def _stream_records(websocket: WebSocket, feed: LogFeed) -> None:
    """Send records as they come until the caller leaves (or this agent stops)."""

    async def send() -> None:
        while True:
            record = await feed.next()
            await websocket.send_text(json.dumps(dataclasses.asdict(record)))

    sender = asyncio.ensure_future(send())
    try:
        # The caller sends nothing; reading is how its leaving is noticed.
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


class _RequireSecret:
    def __init__(self, app: ASGIApp, secret: str) -> None:
        self._app = app
        self._secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if matches(self._secret, Headers(scope=scope).get(HEADER)):
            await self._app(scope, receive, send)
            return
        refusal = JSONResponse(
            {
                "error": f"this agent endpoint serves only its fleet: send the {HEADER} "
                "header with the secret kept in the fleet's store"
            },
            status_code=401,
        )
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).send_denial_response(refusal)
        else:
            await refusal(scope, receive, send)


async def _error_handler(_: Request, exc: Exception) -> JSONResponse:
    return _refusal(exc)


def _refusal(exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=400 if isinstance(exc, _Invalid) else 412)


def _machine_id(value: str) -> str:
    if not is_machine_id(value):
        raise _Invalid(f"{value!r} is not a machine id (14 lowercase hex characters)")
    return value


def _parse(model: type[M], params: Any) -> M:
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise _Invalid(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"invalid {where}: {first['msg']}"


async def serve_endpoint(app: ASGIApp, listen: str) -> AsgiServer:
    """Serve ``app`` on ``listen`` (``host:port``, ``[v6]:port``; port 0 picks one)."""
    return await serve_asgi(
        app,
        listen,
        what="agent endpoint",
        default_port=ENDPOINT_PORT,
        graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
