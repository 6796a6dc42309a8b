"""A small open-loop load generator: requests at a fixed rate against an app through a
proxy, each one recorded with when it was sent, how it ended and which machine served it
(the proxy's ``fly-machine-id`` response header).

Open loop on purpose: a closed loop slows down when the system does, and would hide the
very failures a drill is looking for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

MACHINE_HEADER = "fly-machine-id"
REQUEST_TIMEOUT = 2.0
MAX_IN_FLIGHT = 256


@dataclass(frozen=True, slots=True)
class Sample:
    sent: float
    done: float
    status: int
    """HTTP status; 0 when no response came (refused, reset, timed out)."""
    machine: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400


@dataclass
class LoadGenerator:
    url: str
    host: str
    """The ``Host`` header: the app's name under the proxy's domain."""
    rps: float
    timeout: float = REQUEST_TIMEOUT
    clock: Callable[[], float] = time.monotonic
    samples: list[Sample] = field(default_factory=list)
    _sampled: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set, then wait for the requests still in flight."""
        interval = 1.0 / self.rps
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
            in_flight: set[asyncio.Task[None]] = set()
            next_at = self.clock()
            while not stop.is_set():
                if len(in_flight) < MAX_IN_FLIGHT:
                    task = asyncio.create_task(self._one(client))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                next_at += interval
                delay = next_at - self.clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _one(self, client: httpx.AsyncClient) -> None:
        sent = self.clock()
        try:
            response = await client.get(self.url, headers={"host": self.host}, timeout=self.timeout)
            sample = Sample(
                sent, self.clock(), response.status_code, response.headers.get(MACHINE_HEADER, "")
            )
        except httpx.HTTPError as exc:
            sample = Sample(sent, self.clock(), 0, "", type(exc).__name__)
        self.samples.append(sample)
        async with self._sampled:
            self._sampled.notify_all()

    async def until(self, predicate: Callable[[Sample], bool]) -> Sample:
        """The first sample (recorded so far or from now on) that satisfies ``predicate``."""
        async with self._sampled:
            while True:
                found = next((s for s in self.samples if predicate(s)), None)
                if found is not None:
                    return found
                await self._sampled.wait()

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.sent <= end]
