"""Errors the API returns, as a tree; each knows its HTTP status and wire body.

::

    APIError
    ├── BadRequest                400  invalid_argument, malformed JSON, wrong types
    ├── Unauthorized              401
    ├── NotFound                  404
    │   ├── AppNotFound                "app not found"
    │   ├── MachineNotFound            "machine not found"
    │   ├── VolumeNotFound             "volume not found"
    │   └── LeaseNotFound              "lease not found"
    ├── Timeout                   408  deadline_exceeded (wait)
    ├── Conflict                  409
    │   ├── LeaseHeld                  aborted: ... lease currently held by ...
    │   └── VersionConflict            current_version is stale
    ├── PreconditionFailed        412  failed_precondition
    │   ├── MachineBusy                in the middle of an earlier operation
    │   ├── InsufficientCapacity       status: insufficient_capacity
    │   └── VolumeHostFull             status: volume_placement_capacity
    └── Unprocessable             422
        └── NameTaken                  status: name_taken

Messages follow Fly's ``<code>: <text>`` style where Fly has one, and otherwise say
what to do next.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    status_code = 500
    status: str | None = None
    """Fly's ``main.statusCode`` (``insufficient_capacity``, ``name_taken``, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.status:
            out["status"] = self.status
        return out


class BadRequest(APIError):
    status_code = 400


class Unauthorized(APIError):
    status_code = 401


class NotFound(APIError):
    status_code = 404


class AppNotFound(NotFound):
    def __init__(self, app: str = "") -> None:
        super().__init__("app not found")
        self.app = app


class MachineNotFound(NotFound):
    def __init__(self, machine_id: str = "") -> None:
        super().__init__("machine not found")
        self.machine_id = machine_id


class VolumeNotFound(NotFound):
    def __init__(self, volume_id: str = "") -> None:
        super().__init__("volume not found")
        self.volume_id = volume_id


class LeaseNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("lease not found")


class Timeout(APIError):
    status_code = 408


class Conflict(APIError):
    status_code = 409


class LeaseHeld(Conflict):
    pass


class VersionConflict(Conflict):
    pass


class PreconditionFailed(APIError):
    status_code = 412


class MachineBusy(PreconditionFailed):
    """The machine is applying an earlier operation; raised only once waiting it out
    took too long."""


class InsufficientCapacity(PreconditionFailed):
    status = "insufficient_capacity"


class VolumeHostFull(PreconditionFailed):
    """A machine with a volume must run on the volume's host, and that host has no room."""

    status = "volume_placement_capacity"


class Unprocessable(APIError):
    status_code = 422


class NameTaken(Unprocessable):
    status = "name_taken"
