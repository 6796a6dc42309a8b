"""The agent's side of calls that reach into its machines (see ``roost.api.machine_io``)."""

from __future__ import annotations

import asyncio
from typing import Any

from roost.agent.agent import Agent
from roost.agent.logs import LogRecord, LogStore, Subscription
from roost.agent.procs import process_stats
from roost.agent.usage import UsageLedger
from roost.images.base import ImageRef
from roost.images.store import ImageStore
from roost.runtime.base import DriverError, ExecResult
from roost.runtime.console import PtyTerminal
from roost.store.records import MachineStatus, status_prefix


class LocalHost:
    """Links the API to the agent running in the same process."""

    def __init__(
        self, agent: Agent, logs: LogStore, usage: UsageLedger, images: ImageStore
    ) -> None:
        self._agent = agent
        self._logs = logs
        self._usage = usage
        self._images = images

    async def exec(
        self, machine_id: str, argv: list[str], *, timeout: float, stdin: bytes
    ) -> ExecResult:
        return await self._agent.ctx.driver.exec(machine_id, argv, timeout=timeout, stdin=stdin)

    async def processes(self, machine_id: str) -> list[dict[str, Any]]:
        pids = await self._agent.ctx.driver.processes(machine_id)
        return await asyncio.to_thread(process_stats, pids)

    async def terminal(
        self, machine_id: str, argv: list[str], *, cols: int, rows: int
    ) -> PtyTerminal:
        console = await self._agent.ctx.driver.console(machine_id, argv, cols=cols, rows=rows)
        return PtyTerminal(console)

    async def read_logs(
        self, machine_id: str, *, since: float | None, limit: int
    ) -> list[LogRecord]:
        return self._logs.read(machine_id, since=since, limit=limit)

    def subscribe_logs(self, machine_ids: set[str]) -> Subscription:
        return self._logs.subscribe(machine_ids.__contains__)

    async def isolate(self, host_id: str) -> None:
        self._check_host(host_id)
        await self._agent.isolate()

    async def restore(self, host_id: str) -> None:
        self._check_host(host_id)
        await self._agent.restore()

    def _check_host(self, host_id: str) -> None:
        if host_id != self._agent.host.id:
            raise DriverError(f"host {host_id} is not this host ({self._agent.host.id})")

    async def usage(
        self, app: str | None, *, since: float | None, until: float | None
    ) -> list[dict[str, Any]]:
        """Per machine: running seconds by size, stopped seconds, bytes stored."""
        rows = self._usage.report(app=app, since=since, until=until)
        stored = await self._stored_bytes({r.machine_id for r in rows})
        return [
            {
                "machine": r.machine_id,
                "app": r.app,
                "running_seconds": {k: round(v, 3) for k, v in r.running_seconds.items()},
                "stopped_seconds": round(r.stopped_seconds, 3),
                "rootfs_bytes": stored.get(r.machine_id, 0),
                "volume_bytes": 0,
            }
            for r in rows
        ]

    async def _stored_bytes(self, machines: set[str]) -> dict[str, int]:
        """What each machine keeps on disk while it exists: its image's unpacked size."""
        out = {}
        for kv in (await self._agent.ctx.store.range(status_prefix())).kvs:
            mid = kv.key.rsplit("/", 1)[1]
            if mid not in machines:
                continue
            ref = MachineStatus.from_json(kv.value).image_ref
            if ref.get("digest"):
                image = self._images.cached(
                    ImageRef(ref["registry"], ref["repository"], ref.get("tag", ""), ref["digest"])
                )
                out[mid] = image.size if image else 0
        return out
