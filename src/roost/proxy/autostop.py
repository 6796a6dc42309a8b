"""Stop (or suspend) machines that traffic no longer needs, as Fly's proxy does.

Every ``interval``, per app and region, among started machines whose services have
autostop on:

* more than one machine: with ``over`` machines above their soft limit, if
  ``machines - (over + 1) >= 1`` there is excess capacity: stop one;
* exactly one machine: stop it only if it has no requests in flight;
* never below ``min_machines_running`` started machines in the app's primary region.

At most one machine per region per pass. The one picked is the least loaded; it gets no
new requests from that moment (draining), and is stopped once its requests finish (or
after ``drain_timeout``).

In a fleet each host's proxy stops only machines of its own host: every request to
them passes through it (other proxies deliver through it), so only its load counts
are whole. ``min_machines_running`` still counts the app's reachable machines on every
host.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from roost.proxy.catalog import Catalog, Machine
from roost.proxy.control import ControlError
from roost.proxy.router import Router

log = logging.getLogger("roost.proxy")

DEFAULT_INTERVAL = 120.0
DRAIN_TIMEOUT = 30.0


@dataclass
class Autostopper:
    catalog: Catalog
    router: Router
    region: str
    """The proxy's own region: the primary region of apps that name none."""
    interval: float = DEFAULT_INTERVAL
    drain_timeout: float = DRAIN_TIMEOUT
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _undraining: set[asyncio.Future[None]] = field(default_factory=set)

    async def run(self) -> None:
        while True:
            await self.sleep(self.interval)
            try:
                await self.pass_once()
            except Exception:
                log.exception("autostop pass failed")

    async def pass_once(self) -> list[str]:
        """One pass over every app; returns the ids of the machines it stopped."""
        victims = [m for app in list(self.catalog.apps()) for m in self.choose(app)]
        stopped = await asyncio.gather(*(self._stop(m) for m in victims))
        return [m.id for m, ok in zip(victims, stopped, strict=True) if ok]

    def choose(self, app: str) -> list[Machine]:
        """The machines this pass would stop for ``app`` (at most one per region)."""
        machines = [
            m for m in self.catalog.machines(app) if m.started and m.local and _autostop(m) != "off"
        ]
        if not machines:
            return []
        primary = next((m.primary_region for m in machines if m.primary_region), self.region)
        minimum = max((s.min_machines_running for m in machines for s in m.services), default=0)
        primary_running = sum(
            1
            for m in self.catalog.machines(app)
            if m.started and m.reachable and m.region == primary
        )
        by_region: defaultdict[str, list[Machine]] = defaultdict(list)
        for machine in machines:
            if machine.id not in self.router.draining:
                by_region[machine.region].append(machine)
        chosen = []
        for region, group in sorted(by_region.items()):
            loads = {m.id: self.router.load.get(m.id, 0) for m in group}
            if len(group) > 1:
                over = sum(1 for m in group if loads[m.id] > _soft_limit(m))
                if len(group) - (over + 1) < 1:
                    continue
            elif loads[group[0].id] > 0:
                continue
            if region == primary and primary_running <= minimum:
                continue
            chosen.append(min(group, key=lambda m: (loads[m.id], m.id)))
        return chosen

    async def _stop(self, machine: Machine) -> bool:
        router = self.router
        router.draining.add(machine.id)
        try:
            async with asyncio.timeout(self.drain_timeout):
                while router.load.get(machine.id, 0):
                    await router.wait_for_release()
        except TimeoutError:
            log.info("autostop: machine %s still busy after draining; stopping", machine.id)
        try:
            await router.control.stop(
                machine.app, machine.id, suspend=_autostop(machine) == "suspend"
            )
        except ControlError as exc:
            log.warning("autostop of machine %s failed: %s", machine.id, exc)
            router.draining.discard(machine.id)
            return False
        router.metrics.autostops[(machine.app, machine.id)] += 1
        log.info("autostop: stopped machine %s of app %s", machine.id, machine.app)
        # Draining ends once the catalog no longer shows it started.
        task = asyncio.ensure_future(self._undrain(machine))
        self._undraining.add(task)
        task.add_done_callback(self._undraining.discard)
        return True

    async def _undrain(self, machine: Machine) -> None:
        version = self.catalog.version
        try:
            async with asyncio.timeout(self.drain_timeout):
                while (m := self.catalog.machine(machine.app, machine.id)) and m.started:
                    version = await self.catalog.changed(version)
        except TimeoutError:
            pass
        self.router.draining.discard(machine.id)


def _autostop(machine: Machine) -> str:
    # The most restrictive setting among the machine's services wins (off < stop < suspend).
    order = {"off": 0, "stop": 1, "suspend": 2}
    modes = [s.autostop for s in machine.services] or ["off"]
    return min(modes, key=lambda mode: order.get(mode, 0))


def _soft_limit(machine: Machine) -> int:
    return min((s.soft_limit for s in machine.services), default=0)
