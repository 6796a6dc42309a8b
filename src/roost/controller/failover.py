"""What the elected controller does when a host is lost: start the standbys of its
machines on healthy hosts.

A host is lost when its liveness key (``/alive/{host}``, on the agent's TTL lease) is
gone. From that moment the API reports its machines ``host_status: unreachable`` and
proxies stop routing to them; both read liveness directly, so nothing per machine is
written for that. The controller then, for every machine of the lost host that was
meant to run:

- starts each standby watching it (a machine whose ``config.standbys`` names it) that
  sits on a live host, and
- in the same transaction records the watched machine as stopped, so that when its
  host returns and reconciles from the store the machine stays down: the standby has
  taken its place and nothing runs twice.

Acting is idempotent (a standby already started is left alone), so a new leader simply
re-examines every host that is not alive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from roost.api.views import rfc3339
from roost.cluster import alive_hosts
from roost.spec import ids
from roost.store import KV, Compacted, Compare, Put, Store, StoreError
from roost.store.records import (
    ALIVE_PREFIX,
    HOSTS_PREFIX,
    Event,
    HostRecord,
    MachineRecord,
    event_key,
    host_key,
    machine_key,
    machines_prefix,
)

log = logging.getLogger("roost.controller")

RETRY_DELAY = 1.0
CAS_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Takeover:
    standby: str
    watched: str
    app: str
    host: str


class Failover:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self.takeovers: list[Takeover] = []
        """Every takeover made by this controller, oldest first (for drills and tests)."""

    async def run(self) -> None:
        """While leading: act on every host not alive now, then on each one that goes."""
        while True:
            try:
                listing = await self._store.range(ALIVE_PREFIX)
                alive = {kv.key.removeprefix(ALIVE_PREFIX) for kv in listing.kvs}
                for kv in (await self._store.range(HOSTS_PREFIX)).kvs:
                    host = kv.key.removeprefix(HOSTS_PREFIX)
                    if host not in alive:
                        await self.host_lost(host)
                async for event in self._store.watch(ALIVE_PREFIX, listing.revision + 1):
                    if event.type == "delete":
                        await self.host_lost(event.kv.key.removeprefix(ALIVE_PREFIX))
            except Compacted:
                continue
            except StoreError:
                log.warning("controller: store unavailable; looking again shortly")
                await asyncio.sleep(RETRY_DELAY)
            except Exception:
                log.exception("controller: acting on hosts failed; looking again shortly")
                await asyncio.sleep(RETRY_DELAY)

    async def host_lost(self, host_id: str) -> list[Takeover]:
        alive = await alive_hosts(self._store)
        if host_id in alive:
            return []  # it came back before we got to it
        await self._mark_lost(host_id)
        done: list[Takeover] = []
        for _ in range(CAS_ATTEMPTS):
            made, raced = await self._take_overs(host_id, set(alive))
            done += made
            if not raced:
                break
        self.takeovers += done
        return done

    async def _take_overs(self, host_id: str, alive: set[str]) -> tuple[list[Takeover], bool]:
        """One pass over the lost host's machines; True as well when a change raced us."""
        records = [
            (kv, MachineRecord.from_json(kv.value))
            for kv in (await self._store.range(machines_prefix())).kvs
        ]
        watched = {
            r.id: (kv, r) for kv, r in records if r.host_id == host_id and r.desired == "started"
        }
        made: list[Takeover] = []
        raced = False
        for kv, standby in records:
            targets = [w for w in standby.config.get("standbys") or [] if w in watched]
            if not targets or standby.host_id not in alive or standby.desired != "stopped":
                continue
            watched_kv, watched_record = watched.pop(targets[0])
            if not await self._take_over(kv, standby, watched_kv, watched_record):
                raced = True
                continue
            made.append(Takeover(standby.id, watched_record.id, standby.app, host_id))
            log.warning(
                "host %s lost: standby %s started for machine %s of app %s",
                host_id,
                standby.id,
                watched_record.id,
                standby.app,
            )
        return made, raced

    async def _mark_lost(self, host_id: str) -> None:
        key = host_key(host_id)
        kv = await self._store.get(key)
        if kv is None:
            return
        host = HostRecord.from_json(kv.value)
        if host.lost_at:
            return
        log.warning("host %s (region %s) lost: its liveness lease expired", host_id, host.region)
        lost = dataclasses.replace(host, lost_at=rfc3339(self._clock()))
        await self._store.txn([Compare.unchanged(kv, key)], [Put(key, lost.to_json())])

    async def _take_over(
        self, standby_kv: KV, standby: MachineRecord, watched_kv: KV, watched: MachineRecord
    ) -> bool:
        """Start the standby and record the watched machine stopped, both or neither."""
        now = self._clock()
        stamp = rfc3339(now)
        started = dataclasses.replace(
            standby,
            desired="started",
            action="start",
            generation=standby.generation + 1,
            updated_at=stamp,
        )
        stopped = dataclasses.replace(
            watched,
            desired="stopped",
            action="stop",
            generation=watched.generation + 1,
            updated_at=stamp,
        )
        lost = f"host {watched.host_id} was lost"
        standby_event = Event(
            id=ids.ulid(now),
            type="start",
            status="standby",
            source="flyd",
            timestamp=int(now * 1000),
            message=f"{lost}: started as the standby for {watched.id}",
        )
        watched_event = Event(
            id=ids.ulid(now),
            type="stop",
            status="replaced_by_standby",
            source="flyd",
            timestamp=int(now * 1000),
            message=f"{lost}: replaced by its standby {standby.id}",
        )
        standby_key = machine_key(standby.app, standby.id)
        watched_key = machine_key(watched.app, watched.id)
        result = await self._store.txn(
            [
                Compare.unchanged(standby_kv, standby_key),
                Compare.unchanged(watched_kv, watched_key),
            ],
            [
                Put(standby_key, started.to_json()),
                Put(watched_key, stopped.to_json()),
                Put(event_key(standby.app, standby.id, standby_event.id), standby_event.to_json()),
                Put(event_key(watched.app, watched.id, watched_event.id), watched_event.to_json()),
            ],
        )
        return result.succeeded
