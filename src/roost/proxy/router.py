"""Turns "a request for app A" into a machine with room for it, waking one if needed.

* A machine below its soft limit is used at once (unless its host is suspect, see
  ``suspects``: then it serves only for want of another, as one over its soft limit).
* When every started machine is over its soft limit or on a suspect host (or none is
  started) and a stopped machine with autostart exists, one wake-up starts it — one
  per app at a time, however many requests wait (single-flight). Requests keep going
  to a machine over its soft limit (or on a suspect host) meanwhile, if there is one;
  otherwise they wait, bounded by ``wake_timeout``, until the woken machine is started
  **and** its port accepts.
* When every machine is at its hard limit, requests queue for ``queue_timeout``, then
  fail with :class:`NoCapacity` (503).
* At most ``max_waiting`` requests per app wait at once; more get 503 at once, so a
  burst against a sleeping app cannot hold unbounded memory.

Load is the number of requests (HTTP) or connections (TCP) in flight per machine,
counted here; it never goes to the store. A machine on another host is counted both by
the proxy that chose it and by its own host's proxy, which delivers every request to
it (:meth:`Router.hold`) and so is the one that knows its whole load.

A wake-up waits for the machine's ports to accept: probed directly when it is on this
host, through its host's proxy (``remote_probe``) otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from roost.proxy.balancer import Band, Choice, pick
from roost.proxy.catalog import Catalog, Machine, Service
from roost.proxy.control import ControlError, ControlPlane
from roost.proxy.metrics import ProxyMetrics

log = logging.getLogger("roost.proxy")

WAKE_TIMEOUT = 30.0
QUEUE_TIMEOUT = 5.0
MAX_WAITING = 1000
PROBE_INTERVAL = 0.01
DELIVERY_ATTEMPTS = 3
"""Machines one request or connection may try when nothing could be delivered."""
# States a machine passes through on its way to started: wait for it, don't wake another.
COMING = frozenset({"starting", "restarting", "replacing"})

Probe = Callable[[str, int], Awaitable[bool]]
RemoteProbe = Callable[[Machine, int], Awaitable[bool]]


class NoCapacity(Exception):
    """No machine can take the request; the message is the 503 body."""


async def tcp_probe(address: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


@dataclass
class Lease:
    """One request's (or connection's) hold on a machine's capacity."""

    router: Router
    choice: Choice
    released: bool = False

    @property
    def machine(self) -> Machine:
        return self.choice.machine

    @property
    def service(self) -> Service:
        return self.choice.service

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.router._release(self.machine)


@dataclass
class Router:
    catalog: Catalog
    control: ControlPlane
    metrics: ProxyMetrics
    region: str
    wake_timeout: float = WAKE_TIMEOUT
    queue_timeout: float = QUEUE_TIMEOUT
    max_waiting: int = MAX_WAITING
    """Requests one app may have waiting for a machine; more are refused at once."""
    probe: Probe = tcp_probe
    remote_probe: RemoteProbe | None = None
    """How ports of machines on other hosts are probed (set in a fleet)."""
    rng: random.Random = field(default_factory=random.Random)
    load: dict[str, int] = field(default_factory=dict)
    draining: set[str] = field(default_factory=set)
    _wakes: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _wake_errors: dict[str, str] = field(default_factory=dict)
    _freed: asyncio.Future[None] | None = None
    _waiting: dict[str, int] = field(default_factory=dict)

    async def acquire(
        self,
        app: str,
        service_of: Callable[[Machine], Service | None],
        *,
        exclude: frozenset[str] = frozenset(),
    ) -> Lease:
        deadline = time.monotonic() + max(self.wake_timeout, self.queue_timeout)
        queue_deadline = time.monotonic() + self.queue_timeout
        while True:
            machines = self.catalog.machines(app)
            verdict = pick(
                machines,
                service_of,
                self.load,
                region=self.region,
                exclude=exclude,
                draining=frozenset(self.draining),
                rng=self.rng,
                suspected=self.catalog.suspects.suspected,
            )
            choice = verdict.choice
            if choice is not None and choice.band == "below_soft" and not choice.suspect:
                return self._take(choice)
            if verdict.startable and app not in self._wakes:
                self._wake(app, verdict.startable[0])
            if choice is not None:
                return self._take(choice)
            coming = app in self._wakes or any(
                m.state in COMING and m.reachable and m.id not in exclude and service_of(m)
                for m in machines
            )
            now = time.monotonic()
            if verdict.saturated and not coming and now >= queue_deadline:
                self.metrics.rejected[app] += 1
                raise NoCapacity(
                    f"all machines of app {app} are at their hard concurrency limit; "
                    "retry later or raise services.concurrency.hard_limit"
                )
            if not verdict.saturated and not coming:
                self.metrics.rejected[app] += 1
                raise NoCapacity(self._why_none(app, machines, service_of))
            if now >= deadline:
                self.metrics.rejected[app] += 1
                raise NoCapacity(f"no machine of app {app} became ready in time")
            if self._waiting.get(app, 0) >= self.max_waiting:
                self.metrics.rejected[app] += 1
                raise NoCapacity(
                    f"too many requests are already waiting for app {app}; retry later"
                )
            self._waiting[app] = self._waiting.get(app, 0) + 1
            try:
                await self._wait_for_change(deadline if coming else min(deadline, queue_deadline))
            finally:
                self._waiting[app] -= 1

    def hold(self, machine: Machine, service: Service) -> Lease:
        """Count a request another host's proxy chose ``machine`` for (it checked limits)."""
        in_flight = self.load.get(machine.id, 0)
        band: Band = "below_soft" if in_flight < service.soft_limit else "over_soft"
        return self._take(Choice(machine, service, band, in_flight, 0.0))

    def _take(self, choice: Choice) -> Lease:
        mid = choice.machine.id
        self.load[mid] = self.load.get(mid, 0) + 1
        self.metrics.in_flight[(choice.machine.app, mid)] = self.load[mid]
        self.metrics.requests[(choice.machine.app, mid)] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("routing to %s: %s", mid, choice.reason)
        return Lease(self, choice)

    def _release(self, machine: Machine) -> None:
        remaining = self.load.get(machine.id, 1) - 1
        if remaining:
            self.load[machine.id] = remaining
        else:
            self.load.pop(machine.id, None)
        self.metrics.in_flight[(machine.app, machine.id)] = remaining
        self._signal()

    def _signal(self) -> None:
        """Wake every request waiting for capacity (there is rarely one)."""
        freed, self._freed = self._freed, None
        if freed is not None and not freed.done():
            freed.set_result(None)

    async def wait_for_release(self) -> None:
        """Until some request or connection ends (or a wake-up does)."""
        if self._freed is None:
            self._freed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._freed)

    async def _wait_for_change(self, until: float) -> None:
        """Until capacity frees up, the catalog changes or a wake-up ends (or ``until``)."""
        if self._freed is None:
            self._freed = asyncio.get_running_loop().create_future()
        freed = self._freed
        catalog_changed = asyncio.ensure_future(self.catalog.changed(self.catalog.version))
        try:
            await asyncio.wait(
                [catalog_changed, freed],
                timeout=max(0.0, until - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            catalog_changed.cancel()

    # -- autostart ----------------------------------------------------------------------

    def _wake(self, app: str, machine: Machine) -> None:
        task = asyncio.create_task(self._start_and_probe(app, machine), name=f"wake-{machine.id}")
        self._wakes[app] = task

        def done(_: asyncio.Task[None]) -> None:
            self._wakes.pop(app, None)
            self._signal()

        task.add_done_callback(done)

    async def _start_and_probe(self, app: str, machine: Machine) -> None:
        began = time.monotonic()
        self.metrics.wakeups[(app, machine.id)] += 1
        log.info("autostart: starting machine %s of app %s", machine.id, app)
        try:
            await self.control.start(app, machine.id)
            async with asyncio.timeout(self.wake_timeout):
                version = self.catalog.version
                while True:
                    current = self.catalog.machine(app, machine.id)
                    if current is None:
                        return
                    if current.started:
                        break
                    if current.state == "failed":
                        raise ControlError(f"machine {machine.id} failed to start")
                    version = await self.catalog.changed(version)
                ports = {s.internal_port for s in current.services}
                for port in sorted(ports):
                    # A port starting to accept has no event to wait on.
                    while not await self._ready(current, port):  # noqa: ASYNC110
                        await asyncio.sleep(PROBE_INTERVAL)
        except (ControlError, TimeoutError) as exc:
            log.warning("autostart of machine %s failed: %s", machine.id, exc or "timed out")
            self._wake_errors[app] = str(exc) or "timed out"
            return
        self._wake_errors.pop(app, None)
        self.metrics.wake_latency[app].observe(time.monotonic() - began)

    async def _ready(self, machine: Machine, port: int) -> bool:
        if machine.local:
            return await self.probe(machine.address, port)
        if self.remote_probe is None:
            raise ControlError(f"machine {machine.id} is on host {machine.host_id}: no backhaul")
        return await self.remote_probe(machine, port)

    def _why_none(
        self, app: str, machines: list[Machine], service_of: Callable[[Machine], Service | None]
    ) -> str:
        if not self.catalog.has_app(app):
            return f"no app named {app}"
        serving = [m for m in machines if service_of(m) is not None]
        if not serving:
            return f"app {app} has no machine with a service for this port"
        if app in self._wake_errors:
            return f"could not start a machine of app {app}: {self._wake_errors[app]}"
        if not any(m.reachable for m in serving):
            hosts = ", ".join(sorted({m.host_id for m in serving}))
            return (
                f"no machine of app {app} is reachable: their hosts ({hosts}) are down "
                "or their proxies are not registered"
            )
        return (
            f"no machine of app {app} can take requests: none is started, healthy and "
            "uncordoned, and none can be started (autostart off or none stopped)"
        )
