"""Which machine gets the next request or connection. Pure: no I/O, no clock.

Candidates are the app's machines that are started, uncordoned, healthy (service
checks not critical), not being drained for autostop, and below their service's
``hard_limit``. Among them, as Fly's proxy does:

1. machines below ``soft_limit`` before machines between soft and hard;
2. then the nearest region (ours first, then the others);
3. then the fewest requests in flight;
4. then at random.

The reason for the choice is returned with it, for debug logs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from roost.proxy.catalog import Machine, Service

Band = Literal["below_soft", "over_soft"]


@dataclass(frozen=True, slots=True)
class Choice:
    machine: Machine
    service: Service
    band: Band
    in_flight: int
    local: bool

    @property
    def reason(self) -> str:
        return (
            f"{self.band.replace('_', ' ')} ({self.in_flight} in flight, soft "
            f"{self.service.soft_limit}), {'local' if self.local else 'remote'} region "
            f"{self.machine.region}"
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
) -> Verdict:
    rng = rng or random.Random()
    scored: list[tuple[tuple[int, int, int, float], Choice]] = []
    startable: list[tuple[int, Machine]] = []
    saturated_seen = False
    for machine in machines:
        service = service_of(machine)
        if service is None or machine.id in exclude:
            continue
        if machine.startable:
            if service.autostart:
                startable.append((0 if machine.region == region else 1, machine))
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
        local = machine.region == region
        key = (0 if band == "below_soft" else 1, 0 if local else 1, in_flight, rng.random())
        scored.append((key, Choice(machine, service, band, in_flight, local)))
    startable.sort(key=lambda item: (item[0], item[1].id))
    choice = min(scored, key=lambda item: item[0])[1] if scored else None
    return Verdict(
        choice=choice,
        startable=[m for _, m in startable],
        saturated=saturated_seen and choice is None,
    )
