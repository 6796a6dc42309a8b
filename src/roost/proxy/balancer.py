"""Which machine gets the next request or connection. Pure: no I/O, and no clock but
the one behind ``suspected``.

Candidates are the app's machines that are reachable (their host alive), started,
uncordoned, healthy (service checks not critical), not being drained for autostop, and
below their service's ``hard_limit``. Among them, as Fly's proxy does:

1. machines on hosts this proxy reached lately before those on suspect hosts (see
   ``suspects``): suspects only when nothing else can serve;
2. then machines below ``soft_limit`` before machines between soft and hard;
3. then the nearest region (ours first, then by distance; see ``regions``);
4. then the fewest requests in flight;
5. then at random.

Stopped machines that autostart could wake are offered nearest first too (those on
suspect hosts last). The reason for the choice is returned with it, for debug logs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from roost.proxy.catalog import Machine, Service
from roost.proxy.regions import proximity

Band = Literal["below_soft", "over_soft"]


@dataclass(frozen=True, slots=True)
class Choice:
    machine: Machine
    service: Service
    band: Band
    in_flight: int
    distance_km: float
    """From the proxy's region to the machine's (infinite when either has no place)."""
    suspect: bool = False
    """On a host this proxy failed to reach lately: chosen for want of another."""

    @property
    def reason(self) -> str:
        distance = (
            "unknown distance" if math.isinf(self.distance_km) else f"{self.distance_km:.0f} km"
        )
        return (
            f"{self.band.replace('_', ' ')} ({self.in_flight} in flight, soft "
            f"{self.service.soft_limit}), region {self.machine.region} ({distance}), "
            f"{'this host' if self.machine.local else f'host {self.machine.host_id}'}"
            f"{' (suspect: nothing else can serve)' if self.suspect else ''}"
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the router should do when no machine can take the request right now."""

    choice: Choice | None
    startable: list[Machine]
    """Stopped machines with autostart, nearest first, that a wake-up could start."""
    saturated: bool
    """Started machines exist but every one is at its hard limit."""


def pick(
    machines: Iterable[Machine],
    service_of: Callable[[Machine], Service | None],
    load: Mapping[str, int],
    *,
    region: str,
    exclude: frozenset[str] = frozenset(),
    draining: frozenset[str] = frozenset(),
    rng: random.Random | None = None,
    suspected: Callable[[str], bool] = lambda host: False,
) -> Verdict:
    """``suspected``: whether a host is suspect (asked only of machines on other hosts)."""
    rng = rng or random.Random()
    scored: list[tuple[tuple[bool, int, tuple[int, float, str], int, float], Choice]] = []
    startable: list[tuple[bool, tuple[int, float, str], str, Machine]] = []
    saturated_seen = False
    here = proximity(region, region)
    for machine in machines:
        service = service_of(machine)
        if service is None or machine.id in exclude or not machine.reachable:
            continue
        suspect = not machine.local and suspected(machine.host_id)
        if machine.startable:
            if service.autostart:
                near = proximity(region, machine.region)
                startable.append((suspect, near, machine.id, machine))
            continue
        if not machine.started or machine.cordoned or not machine.healthy:
            continue
        if machine.id in draining:
            continue
        in_flight = load.get(machine.id, 0)
        if service.hard_limit is not None and in_flight >= service.hard_limit:
            saturated_seen = True
            continue
        band: Band = "below_soft" if in_flight < service.soft_limit else "over_soft"
        near = here if machine.region == region else proximity(region, machine.region)
        key = (suspect, 0 if band == "below_soft" else 1, near, in_flight, rng.random())
        scored.append((key, Choice(machine, service, band, in_flight, near[1], suspect)))
    startable.sort(key=lambda item: item[:3])
    choice = min(scored, key=lambda item: item[0])[1] if scored else None
    return Verdict(
        choice=choice,
        startable=[m for *_, m in startable],
        saturated=saturated_seen and choice is None,
    )
