"""A host-down or region-down drill against a running fleet, through its API.

The drill cuts the hosts off (their agents stop renewing liveness and stop following the
store, as behind a partition; machines keep running), keeps them cut off for a while,
then lets them join again. Meanwhile a load generator sends requests to the app through
a proxy elsewhere. It measures:

- detection: cut-off → the fleet reports the hosts down (their liveness lease expired);
- traffic elsewhere: cut-off → the last request that failed or was still served by a
  machine on a cut-off host (every later one was served elsewhere);
- standby start: cut-off → each standby of a machine on those hosts is started;
- failed requests: during the whole drill;
- and after the hosts return, that no machine replaced by a standby runs again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from roost.drill.load import LoadGenerator

POLL_INTERVAL = 0.05
WARM_UP = 1.0
RETURN_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30


class DrillError(Exception):
    """The drill cannot run or could not restore; the message says what to check."""


@dataclass
class Report:
    kind: str
    hosts: list[str]
    detected_after: float | None = None
    traffic_elsewhere_after: float | None = None
    standbys: dict[str, float | None] = field(default_factory=dict)
    """Standby id → seconds from the cut-off until it was started (None: it was not)."""
    requests: int = 0
    failed: int = 0
    returned_after: float | None = None
    ran_twice: list[str] = field(default_factory=list)
    """Machines replaced by a standby that were running again after their host returned."""

    def wire(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "hosts": self.hosts,
            "detected_after": self.detected_after,
            "traffic_elsewhere_after": self.traffic_elsewhere_after,
            "standbys": self.standbys,
            "requests": self.requests,
            "failed": self.failed,
            "returned_after": self.returned_after,
            "ran_twice": self.ran_twice,
        }

    def lines(self) -> list[str]:
        def secs(value: float | None) -> str:
            return "never" if value is None else f"{value:.2f} s"

        out = [
            f"Drill {self.kind}: {', '.join(self.hosts)}",
            f"  detected after:            {secs(self.detected_after)}",
            f"  traffic elsewhere after:   {secs(self.traffic_elsewhere_after)}",
        ]
        if not self.standbys:
            out.append("  standbys:                  none watch machines on these hosts")
        for standby, after in self.standbys.items():
            out.append(f"  standby {standby} started after: {secs(after)}")
        out.append(f"  requests failed:           {self.failed} of {self.requests}")
        out.append(f"  hosts back after restore:  {secs(self.returned_after)}")
        out.append(
            "  ran twice after return:    "
            + (", ".join(self.ran_twice) if self.ran_twice else "nothing")
        )
        return out


class Drill:
    def __init__(
        self,
        api: httpx.AsyncClient,
        app: str,
        *,
        load: LoadGenerator | None,
        standby_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._app = app
        self._load = load
        self._standby_timeout = standby_timeout
        self._clock = clock

    async def hosts_given(self, hosts: list[str]) -> list[str]:
        for host in hosts:
            await self._get(f"/v1/hosts/{host}")
        return hosts

    async def hosts_in_region(self, region: str) -> list[str]:
        hosts = await self._get("/v1/hosts")
        found = [h["id"] for h in hosts if h["region"] == region]
        if not found:
            raise DrillError(f"no host is in region {region}; `roost hosts list` shows them")
        return found

    async def run(self, kind: str, hosts: list[str], hold: float) -> Report:
        views = [await self._get(f"/v1/hosts/{h}") for h in hosts]
        down = [v["id"] for v in views if v["state"] != "up"]
        if down:
            raise DrillError(f"host(s) {', '.join(down)} already down; drill healthy hosts")
        on_hosts = {m["id"] for v in views for m in v["machines"]}
        standbys = await self._standbys(on_hosts)
        report = Report(kind, hosts)
        stop_load = asyncio.Event()
        load_task = asyncio.create_task(self._load.run(stop_load)) if self._load else None
        cut_off: list[str] = []
        try:
            await asyncio.sleep(WARM_UP if self._load else 0)
            cut = self._clock()
            for host in hosts:
                await self._post(f"/v1/hosts/{host}/isolate")
                cut_off.append(host)
            waits = {s: asyncio.create_task(self._started_after(s, cut)) for s in standbys}
            report.detected_after = await self._until_state(hosts, "down", cut, hold)
            await asyncio.sleep(max(0.0, cut + hold - self._clock()))
            report.standbys = {s: await task for s, task in waits.items()}
            restore = self._clock()
            await self._restore(cut_off)
            report.returned_after = await self._until_state(hosts, "up", restore, RETURN_TIMEOUT)
            report.ran_twice = await self._ran_twice(standbys, report.standbys)
        finally:
            # Whatever went wrong, the hosts must not stay cut off.
            await self._restore(cut_off)
            stop_load.set()
            if load_task is not None:
                await load_task
        if self._load is not None:
            self._score_load(report, cut, restore, on_hosts)
        return report

    async def _restore(self, cut_off: list[str]) -> None:
        while cut_off:
            await self._post(f"/v1/hosts/{cut_off[0]}/restore")
            cut_off.pop(0)

    async def _standbys(self, watched: set[str]) -> dict[str, str]:
        """Standby id → the machine on the drilled hosts it watches."""
        machines = await self._get(f"/v1/apps/{self._app}/machines")
        out = {}
        for machine in machines:
            config = machine.get("config") or {}
            targets = [w for w in config.get("standbys") or [] if w in watched]
            if targets and machine["state"] != "started":
                out[machine["id"]] = targets[0]
        return out

    async def _started_after(self, standby: str, cut: float) -> float | None:
        timeout = int(self._standby_timeout)
        response = await self._api.get(
            f"/v1/apps/{self._app}/machines/{standby}/wait",
            params={"state": "started", "timeout": timeout},
            timeout=timeout + 10,
        )
        return self._clock() - cut if response.status_code == 200 else None

    async def _until_state(
        self, hosts: list[str], state: str, since: float, timeout: float
    ) -> float | None:
        """Seconds from ``since`` until every host reports ``state`` (None: not in time).

        Host liveness is the API's to tell, and it offers no watch: poll it finely."""
        deadline = since + timeout
        while self._clock() < deadline:
            views = [await self._get(f"/v1/hosts/{h}") for h in hosts]
            if all(v["state"] == state for v in views):
                return self._clock() - since
            await asyncio.sleep(POLL_INTERVAL)
        return None

    async def _ran_twice(
        self, standbys: dict[str, str], started: dict[str, float | None]
    ) -> list[str]:
        """Machines whose standby took over and that still run once their host is back."""
        out = []
        for standby, watched in standbys.items():
            if started.get(standby) is None:
                continue
            response = await self._api.get(
                f"/v1/apps/{self._app}/machines/{watched}/wait",
                params={"state": "stopped", "timeout": SETTLE_TIMEOUT},
                timeout=SETTLE_TIMEOUT + 10,
            )
            if response.status_code != 200:
                out.append(watched)
        return out

    def _score_load(self, report: Report, cut: float, restore: float, on_hosts: set[str]) -> None:
        assert self._load is not None
        during = self._load.between(cut, self._clock())
        report.requests = len(during)
        report.failed = sum(not s.ok for s in during)
        before_restore = [s for s in during if s.sent <= restore]
        bad = [s for s in before_restore if not s.ok or s.machine in on_hosts]
        last_bad = max((s.done for s in bad), default=cut)
        served_after = any(
            s.ok and s.machine not in on_hosts and s.sent >= last_bad for s in before_restore
        )
        report.traffic_elsewhere_after = last_bad - cut if served_after else None

    async def _get(self, path: str) -> Any:
        return _body(await self._api.get(path))

    async def _post(self, path: str) -> Any:
        return _body(await self._api.post(path))


def _body(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise DrillError(f"{response.request.method} {response.request.url.path}: {message}")
    return response.json()
