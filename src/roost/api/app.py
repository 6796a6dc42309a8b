"""The API's ASGI application: routes, authentication, request ids and error bodies.

Every error leaves as ``{"error": "..."}`` (plus Fly's ``status`` code where one
applies) with the right HTTP status; validation errors name the offending field.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from roost import __version__
from roost.api.dashboard import router as dashboard_router
from roost.api.docs import openapi
from roost.api.errors import APIError
from roost.api.host_routes import router as hosts_router
from roost.api.io_routes import router as io_router
from roost.api.org_routes import router as org_router
from roost.api.routes import router
from roost.api.services import Services
from roost.api.volume_routes import router as volumes_router
from roost.spec import ids

log = logging.getLogger("roost.api")

UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/dashboard"})


def create_app(services: Services, *, ready: Callable[[], bool] = lambda: True) -> RequestContext:
    app = FastAPI(
        title="roost Machines API",
        version=__version__,
        description="Wire-compatible with the Fly.io Machines API v1.",
        redoc_url=None,
    )
    app.state.services = services
    app.include_router(router)
    app.include_router(io_router)
    app.include_router(volumes_router)
    app.include_router(hosts_router)
    app.include_router(org_router)
    app.include_router(dashboard_router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            await services.metrics.render(), media_type="text/plain; version=0.0.4"
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        if not ready():
            return JSONResponse({"error": "starting"}, status_code=503)
        return JSONResponse({"ok": True})

    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    return RequestContext(app, services)


class RequestContext:
    """Authenticates ``/v1`` calls before anything else runs and tags every response
    with a ``fly-request-id``. Plain ASGI: it sits on every request's path."""

    def __init__(self, app: FastAPI, services: Services) -> None:
        self.app = app
        self._auth = services.auth
        self._requests = services.metrics.counter(
            "roost_api_requests_total", "API requests answered.", "method", "status"
        )
        self._latency = services.metrics.histogram(
            "roost_api_request_seconds", "Time to answer API requests (to the first byte)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.ulid()
        began = time.monotonic()

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"].append((b"fly-request-id", request_id.encode()))
                self._requests.inc(scope["method"], str(message["status"]))
                self._latency.observe(time.monotonic() - began)
            await send(message)

        path: str = scope["path"]
        if path.startswith("/v1/"):
            scope["headers"] = _as_json(scope.get("headers", []))
        if path not in UNAUTHENTICATED_PATHS:
            header = _header(scope, b"authorization")
            try:
                caller = await self._auth.authenticate(header)
            except APIError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status_code)
                await response(scope, receive, tagged)
                return
            scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, tagged)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            caller = await self._auth.authenticate(_header(scope, b"authorization"))
        except APIError as exc:
            # Accepted only to be closed with the reason: a refused handshake says nothing.
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4401, "reason": exc.message[:120]})
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def _as_json(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Fly reads every request body as JSON whatever its Content-Type says, and clients
    rely on it (``curl -d`` sends ``application/x-www-form-urlencoded``)."""
    kept = [(k, v) for k, v in headers if k.lower() != b"content-type"]
    kept.append((b"content-type", b"application/json"))
    return kept


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": describe_validation(exc.errors())}, status_code=400)


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404:
        message = "not found: no such API path; see /openapi.json"
    # Keeps Allow on a 405, as RFC 9110 asks.
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        {"error": "internal error; the server log has the details"}, status_code=500
    )


def describe_validation(errors: Any) -> str:
    """One readable sentence for the first problem, naming the field as a dotted path."""
    if not errors:
        return "invalid request"
    first = errors[0]
    kind = first.get("type", "")
    if kind == "json_invalid":
        return f"invalid JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}"
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body",)]
    where = first.get("loc", ("",))[0]
    field = ".".join(loc[1:] if where in ("query", "path", "header") else loc) or "body"
    message = first.get("msg", "invalid value")
    if kind == "missing" and where == "body" and len(loc) == 0:
        return "a JSON body is required"
    prefix = {"query": "query parameter ", "path": "path parameter ", "header": "header "}
    return f"invalid {prefix.get(where, '')}{field}: {message}"
