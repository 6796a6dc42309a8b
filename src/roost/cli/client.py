"""A small typed client for the Machines API v1: one method per endpoint, nothing more.

httpx is imported when a client is built, not with this module, so that commands
which never talk to the API (``roost --help``, ``roost server``) do not pay for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from roost import __version__

if TYPE_CHECKING:
    import httpx

JSONObject = dict[str, Any]

NONCE_HEADER = "fly-machine-lease-nonce"
LEASE_TTL = 120
"""flyctl's lease TTL for one mutating command."""
REQUEST_TIMEOUT = 30.0
WAIT_SLACK = 15.0
"""Extra seconds a wait request may take beyond the timeout the server is given."""


class ClientError(Exception):
    """Anything that makes an API call fail; the message is meant for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIError(ClientError):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(ClientError):
    """No HTTP answer at all: nothing listening, a timeout, a broken connection."""


def authorization(token: str) -> str:
    # A token pasted with its scheme (fly-go's "FlyV1 fm2_..." macaroons) goes as is.
    if token.startswith(("FlyV1 ", "Bearer ")):
        return token
    return f"Bearer {token}"


class Client:
    def __init__(
        self, base_url: str, token: str, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": authorization(token), "User-Agent": f"roost/{__version__}"},
            transport=transport,
            timeout=REQUEST_TIMEOUT,
        )

    def close(self) -> None:
        self._http.close()

    # -- apps ---------------------------------------------------------------------------

    def list_apps(self, org_slug: str | None = None) -> JSONObject:
        return self._call("GET", "/v1/apps", params={"org_slug": org_slug} if org_slug else None)

    def create_app(self, name: str, org_slug: str) -> JSONObject:
        return self._call("POST", "/v1/apps", json={"name": name, "org_slug": org_slug})

    def get_app(self, name: str) -> JSONObject:
        return self._call("GET", _path("apps", name))

    def delete_app(self, name: str, *, force: bool) -> None:
        self._call("DELETE", _path("apps", name), params={"force": _flag(force)})

    # -- machines -----------------------------------------------------------------------

    def list_machines(self, app: str) -> list[JSONObject]:
        return self._call("GET", _path("apps", app, "machines"))

    def get_machine(self, app: str, machine_id: str) -> JSONObject:
        return self._call("GET", _machine(app, machine_id))

    def create_machine(self, app: str, request: JSONObject) -> JSONObject:
        return self._call("POST", _path("apps", app, "machines"), json=request)

    def update_machine(
        self, app: str, machine_id: str, request: JSONObject, *, nonce: str | None = None
    ) -> JSONObject:
        return self._call("POST", _machine(app, machine_id), json=request, nonce=nonce)

    def destroy_machine(
        self, app: str, machine_id: str, *, force: bool, nonce: str | None = None
    ) -> None:
        self._call("DELETE", _machine(app, machine_id), params={"force": _flag(force)}, nonce=nonce)

    def exec_machine(
        self, app: str, machine_id: str, command: Sequence[str], *, timeout: int, stdin: str
    ) -> JSONObject:
        body = {"command": list(command), "timeout": timeout, "stdin": stdin}
        return self._call(
            "POST", _machine(app, machine_id, "exec"), json=body, timeout=timeout + WAIT_SLACK
        )

    def usage(self, app: str | None, *, since: float | None) -> JSONObject:
        path = _path("apps", app, "usage") if app else "/v1/usage"
        return self._call("GET", path, params={"since": since} if since is not None else None)

    def processes(self, app: str, machine_id: str) -> list[JSONObject]:
        return self._call("GET", _machine(app, machine_id, "ps"))

    def logs(
        self,
        app: str,
        *,
        machine: str | None = None,
        region: str | None = None,
        follow: bool = False,
        limit: int = 100,
    ) -> Iterator[JSONObject]:
        """Log records, oldest first; with ``follow``, then new ones until interrupted."""
        import json as jsonlib

        import httpx

        params: dict[str, Any] = {"follow": _flag(follow), "limit": limit}
        if machine:
            params["machine"] = machine
        if region:
            params["region"] = region
        path = _path("apps", app, "logs")
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(REQUEST_TIMEOUT, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise APIError(response.status_code, _error_message(response))
                for line in response.iter_lines():
                    if line.strip():
                        yield jsonlib.loads(line)
        except httpx.ConnectError:
            raise Unreachable(
                f"cannot connect to the roost API at {self.base_url}; is `roost server` "
                "running there? (pick another address with --api-url or ROOST_API_URL)"
            ) from None
        except httpx.TransportError as exc:
            raise Unreachable(f"the log stream from {self.base_url} broke off: {exc}") from None

    def start_machine(self, app: str, machine_id: str, *, nonce: str | None = None) -> JSONObject:
        return self._call("POST", _machine(app, machine_id, "start"), nonce=nonce)

    def stop_machine(
        self,
        app: str,
        machine_id: str,
        *,
        signal: str | None = None,
        timeout: str | None = None,
        nonce: str | None = None,
    ) -> None:
        body = {k: v for k, v in (("signal", signal), ("timeout", timeout)) if v is not None}
        self._call("POST", _machine(app, machine_id, "stop"), json=body, nonce=nonce)

    def restart_machine(
        self,
        app: str,
        machine_id: str,
        *,
        signal: str | None = None,
        timeout: str | None = None,
        nonce: str | None = None,
    ) -> None:
        params = {k: v for k, v in (("signal", signal), ("timeout", timeout)) if v is not None}
        self._call("POST", _machine(app, machine_id, "restart"), params=params, nonce=nonce)

    def signal_machine(self, app: str, machine_id: str, signal: str | int) -> None:
        self._call("POST", _machine(app, machine_id, "signal"), json={"signal": signal})

    def wait_machine(
        self,
        app: str,
        machine_id: str,
        *,
        states: Sequence[str],
        timeout: int,
        version: str | None = None,
    ) -> JSONObject:
        """Block until the machine is in one of ``states``; 408 after ``timeout`` seconds."""
        params: list[tuple[str, str]] = [("state", s) for s in states]
        params.append(("timeout", str(timeout)))
        if version:
            params.append(("version", version))
        return self._call(
            "GET",
            _machine(app, machine_id, "wait"),
            params=params,
            timeout=timeout + WAIT_SLACK,
        )

    def cordon_machine(self, app: str, machine_id: str, *, nonce: str | None = None) -> None:
        self._call("POST", _machine(app, machine_id, "cordon"), nonce=nonce)

    def uncordon_machine(self, app: str, machine_id: str, *, nonce: str | None = None) -> None:
        self._call("POST", _machine(app, machine_id, "uncordon"), nonce=nonce)

    def list_events(self, app: str, machine_id: str, *, limit: int = 20) -> list[JSONObject]:
        return self._call("GET", _machine(app, machine_id, "events"), params={"limit": limit})

    # -- volumes ------------------------------------------------------------------------

    def list_volumes(self, app: str) -> list[JSONObject]:
        return self._call("GET", _path("apps", app, "volumes"))

    def get_volume(self, app: str, volume_id: str) -> JSONObject:
        return self._call("GET", _path("apps", app, "volumes", volume_id))

    def create_volume(self, app: str, request: JSONObject) -> JSONObject:
        return self._call("POST", _path("apps", app, "volumes"), json=request)

    def update_volume(self, app: str, volume_id: str, request: JSONObject) -> JSONObject:
        return self._call("PUT", _path("apps", app, "volumes", volume_id), json=request)

    def extend_volume(self, app: str, volume_id: str, size_gb: int) -> JSONObject:
        path = _path("apps", app, "volumes", volume_id, "extend")
        return self._call("PUT", path, json={"size_gb": size_gb})

    def destroy_volume(self, app: str, volume_id: str) -> JSONObject:
        return self._call("DELETE", _path("apps", app, "volumes", volume_id))

    def list_snapshots(self, app: str, volume_id: str) -> list[JSONObject]:
        return self._call("GET", _path("apps", app, "volumes", volume_id, "snapshots"))

    def create_snapshot(self, app: str, volume_id: str) -> JSONObject | None:
        """The new snapshot (``pending``); None from servers that answer Fly's empty 200."""
        return self._call("POST", _path("apps", app, "volumes", volume_id, "snapshots"))

    # -- hosts --------------------------------------------------------------------------

    def list_hosts(self) -> list[JSONObject]:
        return self._call("GET", "/v1/hosts")

    def get_host(self, host_id: str) -> JSONObject:
        return self._call("GET", f"/v1/hosts/{quote(host_id, safe='')}")

    def host_action(self, host_id: str, action: str) -> JSONObject:
        """``cordon``, ``uncordon``, ``isolate`` or ``restore``."""
        return self._call("POST", f"/v1/hosts/{quote(host_id, safe='')}/{action}")

    # -- leases -------------------------------------------------------------------------

    def acquire_lease(self, app: str, machine_id: str, *, ttl: int = LEASE_TTL) -> JSONObject:
        """The lease's ``data`` (``nonce``, ``expires_at``, ``owner``, ...)."""
        body = self._call("POST", _machine(app, machine_id, "lease"), json={"ttl": ttl})
        return body["data"]

    def release_lease(self, app: str, machine_id: str, nonce: str) -> None:
        self._call("DELETE", _machine(app, machine_id, "lease"), nonce=nonce)

    # -- transport ----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        nonce: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        import httpx

        try:
            response = self._http.request(
                method,
                path,
                params=params,
                json=json,
                headers={NONCE_HEADER: nonce} if nonce else None,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.ConnectError:
            raise Unreachable(
                f"cannot connect to the roost API at {self.base_url}; is `roost server` "
                "running there? (pick another address with --api-url or ROOST_API_URL)"
            ) from None
        except httpx.TimeoutException:
            raise Unreachable(f"the roost API at {self.base_url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot talk to the roost API at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise APIError(response.status_code, _error_message(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.base_url} answered {method} {path} with something other than JSON; "
                "is --api-url pointing at a roost server?"
            ) from None


@contextlib.contextmanager
def held_lease(client: Client, app: str, machine_id: str) -> Iterator[str]:
    """Hold the machine's lease for the block; yields the nonce to send with mutations."""
    nonce: str = client.acquire_lease(app, machine_id)["nonce"]
    try:
        yield nonce
    finally:
        # Like flyctl, a failed release is no reason to fail the command: the lease
        # expires by itself, and a destroy has already removed it ("lease not found").
        with contextlib.suppress(ClientError):
            client.release_lease(app, machine_id, nonce)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        # fly-go prefers "message" over "error" when both are present.
        message = body.get("message") or body.get("error")
        if isinstance(message, str) and message:
            return message
    text = response.text.strip()
    return text[:300] if text else f"HTTP {response.status_code} {response.reason_phrase}"


def _path(*segments: str) -> str:
    return "/v1/" + "/".join(quote(s, safe="") for s in segments)


def _machine(app: str, machine_id: str, *action: str) -> str:
    return _path("apps", app, "machines", machine_id, *action)


def _flag(value: bool) -> str:
    return "true" if value else "false"
