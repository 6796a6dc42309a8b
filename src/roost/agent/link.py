"""The agent's side of calls that reach into its machines (see ``roost.api.machine_io``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from roost.agent.agent import Agent
from roost.agent.logs import LogRecord, LogStore, Subscription
from roost.agent.procs import process_stats
from roost.runtime.base import ExecResult
from roost.runtime.console import Console


class LocalHost:
    """Links the API to the agent running in the same process."""

    def __init__(self, agent: Agent, logs: LogStore) -> None:
        self._agent = agent
        self._logs = logs

    async def exec(
        self, machine_id: str, argv: list[str], *, timeout: float, stdin: bytes
    ) -> ExecResult:
        return await self._agent.ctx.driver.exec(machine_id, argv, timeout=timeout, stdin=stdin)

    async def processes(self, machine_id: str) -> list[dict[str, Any]]:
        pids = await self._agent.ctx.driver.processes(machine_id)
        return await asyncio.to_thread(process_stats, pids)

    async def console(self, machine_id: str, argv: list[str], *, cols: int, rows: int) -> Console:
        return await self._agent.ctx.driver.console(machine_id, argv, cols=cols, rows=rows)

    def read_logs(self, machine_id: str, *, since: float | None, limit: int) -> list[LogRecord]:
        return self._logs.read(machine_id, since=since, limit=limit)

    def subscribe_logs(self, wants: Callable[[str], bool]) -> Subscription:
        return self._logs.subscribe(wants)
