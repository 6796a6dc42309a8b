"""The agent's metrics: machines by state, start and stop latency, image pulls, health
check results, and each running machine's CPU and memory (from its cgroups)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from roost.metrics import Registry, Sample
from roost.runtime.base import Driver, MachineStats


@dataclass(frozen=True, slots=True)
class MachineView:
    """What the metrics need of a supervised machine."""

    id: str
    app: str
    state: str
    checks: list[dict[str, str]]


class AgentMetrics:
    def __init__(
        self, registry: Registry, driver: Driver, machines: Callable[[], Iterable[MachineView]]
    ) -> None:
        self._driver = driver
        self._machines = machines
        self.start_seconds = registry.histogram(
            "roost_machine_start_seconds", "Prepare and start of a machine's process."
        )
        self.stop_seconds = registry.histogram(
            "roost_machine_stop_seconds", "Signal to exit of a machine's process."
        )
        self.image_pulls = registry.counter(
            "roost_image_pulls_total", "Image pulls, cached or from a registry.", "result"
        )
        self.image_pull_seconds = registry.histogram(
            "roost_image_pull_seconds", "Time to have an image ready to run."
        )
        registry.collected("roost_machines", "Machines on this host by state.", self._by_state)
        registry.collected(
            "roost_machine_check_status", "Health checks (1 for the current status).", self._checks
        )
        registry.collected(
            "roost_machine_cpu_seconds", "CPU time used by a running machine.", self._cpu
        )
        registry.collected(
            "roost_machine_memory_bytes", "Memory used by a running machine.", self._memory
        )
        registry.collected(
            "roost_machine_memory_limit_bytes", "Memory limit of a running machine.", self._limit
        )

    async def _by_state(self) -> Iterable[Sample]:
        counts = Counter(m.state for m in self._machines())
        return [({"state": state}, count) for state, count in sorted(counts.items())]

    async def _checks(self) -> Iterable[Sample]:
        return [
            (
                {"app": m.app, "machine": m.id, "check": c["name"], "status": c["status"]},
                1,
            )
            for m in self._machines()
            for c in m.checks
        ]

    async def _stats(self) -> list[tuple[MachineView, MachineStats]]:
        out = []
        for machine in self._machines():
            if machine.state == "started":
                stats = await self._driver.stats(machine.id)
                if stats is not None:
                    out.append((machine, stats))
        return out

    async def _cpu(self) -> Iterable[Sample]:
        return [({"app": m.app, "machine": m.id}, s.cpu_seconds) for m, s in await self._stats()]

    async def _memory(self) -> Iterable[Sample]:
        return [({"app": m.app, "machine": m.id}, s.memory_bytes) for m, s in await self._stats()]

    async def _limit(self) -> Iterable[Sample]:
        return [
            ({"app": m.app, "machine": m.id}, s.memory_limit_bytes)
            for m, s in await self._stats()
            if s.memory_limit_bytes is not None
        ]
