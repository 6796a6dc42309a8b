"""What reaches into a running machine, on the host it runs on: logs, exec, processes.

The API finds the machine in the store, then calls its host through a ``HostLink``.
``roost server`` links to its own agent in process (``roost.agent.link``); ``roost api``
links to each host's agent endpoint over HTTP (``roost.api.remote``).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

from roost.agent.logs import LogRecord
from roost.api.console import Terminal
from roost.api.errors import BadRequest, PreconditionFailed
from roost.api.machines import Machines
from roost.runtime.base import DriverError, ExecResult

log = logging.getLogger("roost.api")

EXEC_TIMEOUT = 30
DEFAULT_SHELL = "/bin/sh"
MAX_EXEC_TIMEOUT = 600


class LogFeed(Protocol):
    """New log records of some machines, from the moment of subscribing."""

    async def next(self) -> LogRecord: ...

    def close(self) -> None: ...


class HostLink(Protocol):
    async def exec(
        self, machine_id: str, argv: list[str], *, timeout: float, stdin: bytes
    ) -> ExecResult: ...

    async def processes(self, machine_id: str) -> list[dict[str, Any]]: ...

    async def terminal(
        self, machine_id: str, argv: list[str], *, cols: int, rows: int
    ) -> Terminal: ...

    async def read_logs(
        self, machine_id: str, *, since: float | None, limit: int
    ) -> list[LogRecord]: ...

    def subscribe_logs(self, machine_ids: set[str]) -> LogFeed: ...

    async def usage(
        self, app: str | None, *, since: float | None, until: float | None
    ) -> list[dict[str, Any]]: ...

    async def isolate(self, host_id: str) -> None:
        """Cut the host off from the fleet, as a drill (its machines keep running)."""

    async def restore(self, host_id: str) -> None:
        """End a drill's isolation: the host joins again."""


class MachineIO:
    def __init__(self, machines: Machines, host: HostLink) -> None:
        self._machines = machines
        self._host = host

    async def exec(
        self,
        app: str,
        mid: str,
        *,
        cmd: str | None,
        command: list[str] | None,
        stdin: str | None,
        timeout: int | None,
    ) -> dict[str, Any]:
        if command:
            argv = command
        elif cmd:
            try:
                argv = shlex.split(cmd)
            except ValueError as exc:
                raise BadRequest(f"invalid cmd: {exc}") from None
        else:
            raise BadRequest("exec needs a command: send command (a list) or cmd (a string)")
        seconds = timeout or EXEC_TIMEOUT
        if not 1 <= seconds <= MAX_EXEC_TIMEOUT:
            raise BadRequest(f"invalid_argument: timeout must be 1 to {MAX_EXEC_TIMEOUT} seconds")
        await self._running(app, mid)
        try:
            result = await self._host.exec(mid, argv, timeout=seconds, stdin=(stdin or "").encode())
        except DriverError as exc:
            raise PreconditionFailed(f"failed_precondition: {exc}") from None
        out: dict[str, Any] = {
            "exit_code": result.exit_code,
            "stdout": result.stdout.decode(errors="replace"),
            "stderr": result.stderr.decode(errors="replace"),
        }
        if result.signal is not None:
            out["exit_signal"] = result.signal
        if result.timed_out:
            out["stderr"] += f"\nexec timed out after {seconds}s and was killed\n"
        return out

    async def console(
        self, app: str, mid: str, argv: list[str], *, cols: int, rows: int
    ) -> Terminal:
        if not (1 <= cols <= 1000 and 1 <= rows <= 1000):
            raise BadRequest("invalid_argument: cols and rows must be 1 to 1000")
        await self._running(app, mid)
        try:
            return await self._host.terminal(mid, argv or [DEFAULT_SHELL], cols=cols, rows=rows)
        except DriverError as exc:
            raise PreconditionFailed(f"failed_precondition: {exc}") from None

    async def processes(
        self, app: str, mid: str, *, sort_by: str | None, order: str | None
    ) -> list[dict[str, Any]]:
        await self._running(app, mid)
        try:
            stats = await self._host.processes(mid)
        except DriverError as exc:
            raise PreconditionFailed(f"failed_precondition: {exc}") from None
        if sort_by:
            if sort_by not in ("pid", "cpu", "rss", "rtime", "stime", "command"):
                raise BadRequest(f"invalid_argument: cannot sort by {sort_by!r}")
            stats.sort(key=lambda p: p[sort_by], reverse=(order or "asc") == "desc")
        return stats

    async def machines_for_logs(
        self, app: str, machine: str | None, region: str | None
    ) -> dict[str, str]:
        """Machine id → region, for the machines whose logs were asked for."""
        listed = await self._machines.list(app, include_deleted=True, summary=True)
        chosen = {
            m["id"]: m["region"]
            for m in listed
            if (machine is None or m["id"] == machine) and (region is None or m["region"] == region)
        }
        if machine is not None and not chosen:
            await self._machines.get(app, machine)  # a 404 that says which
        return chosen

    async def read_logs(
        self, regions: dict[str, str], *, since: float | None, limit: int
    ) -> list[LogRecord]:
        records: list[LogRecord] = []
        for mid in regions:
            try:
                records += await self._host.read_logs(mid, since=since, limit=limit)
            except DriverError as exc:
                if len(regions) == 1:
                    raise PreconditionFailed(f"failed_precondition: {exc}") from None
                # One host down must not hide the logs of the app's other machines.
                log.warning("logs of machine %s left out: %s", mid, exc)
        records.sort(key=lambda r: r.timestamp)
        return records[-limit:] if limit else records

    async def follow_logs(
        self, regions: dict[str, str], *, since: float | None, limit: int
    ) -> AsyncIterator[LogRecord]:
        """History, then new records as they come, without gaps or repeats."""
        # Subscribing before reading history: nothing written in between is missed.
        subscription = self._host.subscribe_logs(set(regions))
        try:
            history = await self.read_logs(regions, since=since, limit=limit)
            for record in history:
                yield record
            last = history[-1].timestamp if history else float("-inf")
            seen = {r for r in history if r.timestamp == last}
            while True:
                record = await subscription.next()
                if record.timestamp > last or (record.timestamp == last and record not in seen):
                    yield record
        finally:
            subscription.close()

    async def usage(self, app: str | None, *, since: float | None) -> dict[str, Any]:
        """Usage per machine and totals, for one app or all of them."""
        if app is not None:
            await self._machines.require_app(app)
        machines = await self._host.usage(app, since=since, until=None)
        running: dict[str, float] = {}
        for machine in machines:
            for size, seconds in machine["running_seconds"].items():
                running[size] = round(running.get(size, 0.0) + seconds, 3)
        return {
            "app": app,
            "since": since,
            "machines": machines,
            "totals": {
                "running_seconds": running,
                "stopped_seconds": round(sum(m["stopped_seconds"] for m in machines), 3),
                "rootfs_bytes": sum(m["rootfs_bytes"] for m in machines),
                "volume_bytes": sum(m["volume_bytes"] for m in machines),
            },
        }

    async def _running(self, app: str, mid: str) -> None:
        machine = await self._machines.get(app, mid)
        if machine["state"] != "started":
            raise PreconditionFailed(
                f"failed_precondition: machine {mid} is {machine['state']}; start it first"
            )


def log_view(record: LogRecord, app: str, regions: dict[str, str]) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(record.timestamp, UTC)
    return {
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        "machine": record.machine,
        "app": app,
        "region": regions.get(record.machine, ""),
        "stream": record.stream,
        "message": record.message,
    }
