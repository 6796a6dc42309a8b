"""How the proxy asks for machines to start and stop: through the API, like any client,
so the store stays the one record of desired state.

``LocalControl`` calls the API's machine service in the same process (``roost
server``); ``RemoteControl`` calls an API over HTTP (``roost proxy``).
"""

from __future__ import annotations

from typing import Protocol

import httpx

from roost.api.machines import Machines


class ControlError(Exception):
    """The API refused or failed; the message says why."""


class ControlPlane(Protocol):
    async def start(self, app: str, machine_id: str) -> None: ...

    async def stop(self, app: str, machine_id: str, *, suspend: bool) -> None: ...


class LocalControl:
    def __init__(self, machines: Machines) -> None:
        self._machines = machines

    async def start(self, app: str, machine_id: str) -> None:
        try:
            await self._machines.start(app, machine_id, None)
        except Exception as exc:
            raise ControlError(str(exc)) from exc

    async def stop(self, app: str, machine_id: str, *, suspend: bool) -> None:
        desired = "suspended" if suspend else "stopped"
        try:
            await self._machines.stop(app, machine_id, None, desired=desired)
        except Exception as exc:
            raise ControlError(str(exc)) from exc


class RemoteControl:
    def __init__(self, api_url: str, token: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    async def start(self, app: str, machine_id: str) -> None:
        await self._post(f"/v1/apps/{app}/machines/{machine_id}/start")

    async def stop(self, app: str, machine_id: str, *, suspend: bool) -> None:
        action = "suspend" if suspend else "stop"
        await self._post(f"/v1/apps/{app}/machines/{machine_id}/{action}")

    async def _post(self, path: str) -> None:
        try:
            response = await self._client.post(path)
        except httpx.HTTPError as exc:
            raise ControlError(f"API unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ControlError(f"API answered {response.status_code}: {message}")

    async def aclose(self) -> None:
        await self._client.aclose()
