"""The web dashboard: one self-contained page at ``/dashboard``.

The page itself needs no token (it holds no data); it asks for one and sends it on
every ``/v1`` call it makes from the browser, so the API's authentication is the only
gate. The Content-Security-Policy pins the page's own inline style and script by hash
and lets it talk to nothing but this origin.
"""

from __future__ import annotations

import base64
import hashlib

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from roost.api.dashboard.page import PAGE, SCRIPT, STYLE

PATH = "/dashboard"

router = APIRouter()


def _sha256(source: str) -> str:
    digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
    return f"'sha256-{digest}'"


HEADERS = {
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256(SCRIPT)}",
            f"style-src {_sha256(STYLE)}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    ),
    # The page changes with the server's version; revalidating costs one small request.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get(PATH, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)
