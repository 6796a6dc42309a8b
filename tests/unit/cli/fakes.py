"""A fake Machines API behind an httpx.MockTransport, and Machine bodies as the API sends them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from click.testing import Result

APP = "web"
MID = "3d8d9e1c5e6f78"
MACHINE_PATH = f"/v1/apps/{APP}/machines/{MID}"

Reply = tuple[int, Any]
RunCLI = Callable[..., Result]
"""The ``roost`` fixture: ``roost(*args, token=, interactive=, input=, transport=)``."""


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, list[str]]
    headers: httpx.Headers
    body: Any


class FakeAPI:
    """Canned replies per (method, path), in order; the last reply repeats."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._routes: dict[tuple[str, str], list[Reply]] = {}

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self._routes[(method, path)] = list(replies)

    def to(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if (c.method, c.path) == (method, path)]

    def handle(self, request: httpx.Request) -> httpx.Response:
        params: dict[str, list[str]] = {}
        for key, value in request.url.params.multi_items():
            params.setdefault(key, []).append(value)
        body = json.loads(request.content) if request.content else None
        self.calls.append(Call(request.method, request.url.path, params, request.headers, body))
        replies = self._routes.get((request.method, request.url.path))
        if not replies:
            return httpx.Response(404, json={"error": f"unexpected {request.method} {request.url}"})
        status, payload = replies.pop(0) if len(replies) > 1 else replies[0]
        if payload is None:
            return httpx.Response(status)
        return httpx.Response(status, json=payload)


def machine(**overrides: Any) -> dict[str, Any]:
    """A Machine body as the API returns it."""
    out: dict[str, Any] = {
        "id": MID,
        "name": "quiet-sun-1234",
        "state": "started",
        "region": "local",
        "instance_id": "01V1",
        "version": "01V1",
        "private_ip": "fdaa:0:1::5",
        "image_ref": {
            "registry": "docker.io",
            "repository": "library/alpine",
            "tag": "3.20",
            "digest": "sha256:" + "a" * 64,
            "labels": {},
        },
        "created_at": "2024-05-01T12:00:00Z",
        "updated_at": "2024-05-01T12:00:05Z",
        "cordoned": False,
        "config": {
            "image": "alpine:3.20",
            "init": {"cmd": ["sleep", "inf"]},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "restart": {"policy": "always"},
            "env": {"A": "1"},
        },
        "host_status": "ok",
        "events": [],
        "checks": [],
    }
    out.update(overrides)
    return out


def lease(nonce: str = "5c35f65c9f95") -> Reply:
    return 201, {
        "status": "success",
        "data": {
            "nonce": nonce,
            "expires_at": 1714564920,
            "owner": "admin",
            "description": "",
            "version": "01V1",
        },
    }


def leased(api: FakeAPI, machine_id: str = MID, nonce: str = "5c35f65c9f95") -> None:
    """The lease endpoints of one machine, answering like the real API."""
    path = f"/v1/apps/{APP}/machines/{machine_id}/lease"
    api.on("POST", path, lease(nonce))
    api.on("DELETE", path, (200, {"status": "success", "data": {"ok": True}}))
