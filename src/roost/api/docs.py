"""What each route answers, for ``/openapi.json``: its body and every error it can give.

Routes return plain dicts; ``answers(...)`` goes in a route's ``responses`` so the
document names the body's model and each status code with Fly's error body. Every
route can answer 400 (a parameter or body it cannot read), 401 (no valid token) and
404 (an unknown app, machine, volume or path); the rest are listed where they happen.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from roost.api.responses import ErrorResponse

EVERYWHERE = (400, 401, 404)
WHY = {
    400: "The request is invalid; the error names the field.",
    401: "No valid API token.",
    404: "No such app, machine, volume or path.",
    408: "The machine did not reach the state in time.",
    409: "A lease is held by someone else, the version is stale, or the request raced "
    "another change.",
    412: "Not possible in the current state (capacity, a stopped machine, ...).",
    422: "The name is taken.",
}


def answers(
    body: Any = None,
    *errors: int,
    status: int = 200,
    media_type: str = "application/json",
    description: str = "OK",
) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    if body is not None:
        if media_type == "application/json":
            out[status] = {"model": body, "description": description}
        else:
            schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
            out[status] = {
                "description": description,
                "content": {media_type: {"schema": schema}},
            }
    for code in sorted({*EVERYWHERE, *errors}):
        out[code] = {"model": ErrorResponse, "description": WHY[code]}
    return out


def openapi(app: FastAPI) -> dict[str, Any]:
    """The document, without FastAPI's own 422 validation answer: roost answers 400."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in schema["paths"].values():
            for operation in path.values():
                invalid = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(invalid):
                    del operation["responses"]["422"]
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema
