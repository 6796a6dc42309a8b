"""What the proxy knows about apps, machines and hosts: a read-only view kept from the store.

The catalog lists ``/apps/``, ``/machines/``, ``/status/``, ``/hosts/``, ``/alive/``
and ``/proxies/`` once, then follows their changes through watches (re-listing after
compaction or errors). When the store is unreachable it keeps serving its last known
view: routing must not stop because the control plane is down, and a lost watch must
not make every host look dead. Every change bumps ``version`` and wakes ``changed()``
waiters, which is how autostart learns that a machine it started is up.

In a fleet (``host_id`` set) each machine is placed: on this host (local, dialled at
its private address), or on another host, reached through that host's proxy (its
``/proxies/`` record). A machine is unreachable, so neither routed to nor started,
while its host is registered but has no liveness key, or is another host with no
proxy record. A host with no ``/hosts/`` record at all (data from before hosts
registered) counts as this one. Without ``host_id`` every machine is local.

The catalog also keeps what this proxy learned first-hand about the other hosts:
``suspects``, those it failed to reach lately. A host whose liveness key is put with a
new value (it joined again, under a new epoch) is trusted again at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from roost.proxy.suspects import Suspects
from roost.spec.config import MachineConfig, MachineService
from roost.store import Compacted, Store, StoreError
from roost.store.records import MachineRecord, MachineStatus, ProxyRecord

log = logging.getLogger("roost.proxy")

DEFAULT_SOFT_LIMIT = 20
RETRY_DELAY = 1.0
PREFIXES = ("/apps/", "/machines/", "/status/", "/hosts/", "/alive/", "/proxies/")
HOST_KINDS = frozenset({"hosts", "alive", "proxies"})


@dataclass(frozen=True, slots=True)
class Port:
    port: int
    handlers: tuple[str, ...]
    force_https: bool = False

    @property
    def http(self) -> bool:
        return "http" in self.handlers


@dataclass(frozen=True, slots=True)
class Service:
    """One of a machine's services, with Fly's defaults filled in."""

    internal_port: int
    protocol: str
    ports: tuple[Port, ...]
    concurrency: str = "connections"
    soft_limit: int = DEFAULT_SOFT_LIMIT
    hard_limit: int | None = None
    autostart: bool = True
    autostop: str = "off"
    min_machines_running: int = 0

    @property
    def http(self) -> bool:
        return any(p.http for p in self.ports)

    @classmethod
    def from_config(cls, service: MachineService) -> Service:
        concurrency = service.concurrency
        soft = concurrency.soft_limit if concurrency and concurrency.soft_limit else None
        hard = concurrency.hard_limit if concurrency else None
        ports = tuple(
            Port(p.port, tuple(p.handlers or ()), bool(p.force_https))
            for p in service.ports or ()
            if p.port is not None
        )
        return cls(
            internal_port=service.internal_port,
            protocol=service.protocol,
            ports=ports,
            concurrency=concurrency.type if concurrency else "connections",
            soft_limit=soft or (min(DEFAULT_SOFT_LIMIT, hard) if hard else DEFAULT_SOFT_LIMIT),
            hard_limit=hard,
            autostart=service.autostart if service.autostart is not None else True,
            autostop=service.autostop or "off",
            min_machines_running=service.min_machines_running or 0,
        )


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine as routing sees it."""

    id: str
    app: str
    region: str
    state: str
    address: str
    cordoned: bool
    services: tuple[Service, ...]
    healthy: bool
    primary_region: str = ""
    http: Service | None = None
    """The service the HTTP listener serves (see ``http_service``), found once."""
    host_id: str = ""
    local: bool = True
    """On this proxy's host: dialled at ``address``."""
    reachable: bool = True
    """False while its host is down, or is another host whose proxy is unknown."""
    backhaul: tuple[str, int] | None = None
    """Where to deliver to it when it is on another host: that host's proxy."""

    @property
    def started(self) -> bool:
        return self.state == "started"

    @property
    def startable(self) -> bool:
        return self.state in ("stopped", "suspended", "created")

    def service_for_port(self, port: int) -> Service | None:
        return next((s for s in self.services if any(p.port == port for p in s.ports)), None)

    def http_service(self) -> Service | None:
        return self.http


@dataclass
class _Entry:
    record: MachineRecord | None = None
    status: MachineStatus | None = None
    services: tuple[Service, ...] = ()
    primary_region: str = ""


Placement = tuple[bool, bool, tuple[str, int] | None]
"""(local, reachable, backhaul address) of the machines of one host."""
HERE: Placement = (True, True, None)


@dataclass
class Catalog:
    store: Store
    host_id: str = ""
    """This proxy's host in a fleet; empty: one host, every machine local."""
    suspects: Suspects = field(default_factory=Suspects)
    """Other hosts this proxy failed to reach lately (the balancer avoids them)."""
    _apps: set[str] = field(default_factory=set)
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _hosts: set[str] = field(default_factory=set)
    _alive: set[str] = field(default_factory=set)
    _epochs: dict[str, str] = field(default_factory=dict)
    """The last liveness value seen per host; never reset, so listing again (which
    replays them) does not pass for a host joining again."""
    _proxies: dict[str, tuple[str, int]] = field(default_factory=dict)
    _by_app: dict[str, dict[str, Machine]] = field(default_factory=dict)
    _by_id: dict[str, Machine] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _synced: asyncio.Event = field(default_factory=asyncio.Event)
    version: int = 0
    applied: int = 0
    """The store revision the view reflects (the last change applied)."""

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._follow(), name="proxy-catalog")]
        await self._synced.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- queries ------------------------------------------------------------------------

    def has_app(self, app: str) -> bool:
        return app in self._apps

    def apps(self) -> Iterable[str]:
        return self._apps

    def machines(self, app: str) -> list[Machine]:
        return list(self._by_app.get(app, {}).values())

    def machine(self, app: str, machine_id: str) -> Machine | None:
        return self._by_app.get(app, {}).get(machine_id)

    def machine_by_id(self, machine_id: str) -> Machine | None:
        """Machine ids are unique platform-wide: deliveries from other hosts name only it."""
        return self._by_id.get(machine_id)

    async def changed(self, version: int) -> int:
        """Until the catalog moves past ``version``; returns the new version."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.version != version)
            return self.version

    # -- following the store --------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                revision = await self._list()
                self._synced.set()
                # One watch over the common prefix keeps changes in revision order.
                async for event in self.store.watch("/", revision + 1):
                    key = event.kv.key
                    self.applied = max(self.applied, event.kv.mod_revision)
                    if key.startswith(PREFIXES):
                        value = event.kv.value if event.type == "put" else None
                        self._apply(key, value)
                    await self._bump()
            except Compacted:
                continue
            except StoreError:
                # Keep routing on the last known view until the store is back.
                log.warning("catalog: store unavailable; serving the last known view")
                self._synced.set()
                await asyncio.sleep(RETRY_DELAY)

    async def _list(self) -> int:
        """Load every prefix; returns the revision to watch after.

        The prefixes are read at different revisions, so watching from the oldest one
        replays a few changes already seen; applying a change twice is harmless. The
        old view is dropped only once every prefix is read, so a listing that fails
        half-way leaves it whole.
        """
        listings = [await self.store.range(prefix) for prefix in PREFIXES]
        self._apps, self._entries = set(), {}
        self._hosts, self._alive, self._proxies = set(), set(), {}
        for listing in listings:
            for kv in listing.kvs:
                self._apply(kv.key, kv.value, rebuild=False)
        revision = min(listing.revision for listing in listings)
        self.applied = max(listing.revision for listing in listings)
        self._rebuild_all()
        await self._bump()
        return revision

    def _apply(self, key: str, value: str | None, *, rebuild: bool = True) -> None:
        parts = key.split("/")
        if parts[1] == "apps" and len(parts) == 3:
            if value is None:
                self._apps.discard(parts[2])
            else:
                self._apps.add(parts[2])
            return
        if parts[1] in HOST_KINDS and len(parts) == 3:
            self._apply_host(parts[1], parts[2], value, rebuild=rebuild)
            return
        if len(parts) != 4:
            return
        mid = parts[3]
        entry = self._entries.setdefault(mid, _Entry())
        if parts[1] == "machines":
            entry.record = MachineRecord.from_json(value) if value else None
            entry.services, entry.primary_region = _services(entry.record)
        elif parts[1] == "status":
            entry.status = MachineStatus.from_json(value) if value else None
        if entry.record is None and entry.status is None:
            self._entries.pop(mid, None)
        if rebuild:
            self._rebuild(mid, parts[2])

    def _apply_host(self, kind: str, host: str, value: str | None, *, rebuild: bool) -> None:
        before = self._placement(host)
        if kind == "hosts":
            _toggle(self._hosts, host, value is not None)
        elif kind == "alive":
            _toggle(self._alive, host, value is not None)
            if value is not None and self._epochs.get(host) != value:
                self._epochs[host] = value
                self.suspects.clear(host)
        else:
            address = _proxy_address(host, value) if value is not None else None
            if address is None:
                self._proxies.pop(host, None)
            else:
                self._proxies[host] = address
        # Liveness keys come and go with leases; most changes move nothing.
        if rebuild and self._placement(host) != before:
            for mid, entry in self._entries.items():
                if entry.record is not None and entry.record.host_id == host:
                    self._rebuild(mid, entry.record.app)

    def _placement(self, host: str) -> Placement:
        if not self.host_id:
            return HERE
        registered = host in self._hosts
        if not host or host == self.host_id or not registered:
            return True, not registered or host in self._alive, None
        backhaul = self._proxies.get(host)
        return False, backhaul is not None and host in self._alive, backhaul

    def _rebuild_all(self) -> None:
        self._by_app, self._by_id = {}, {}
        for mid, entry in self._entries.items():
            if entry.record is not None:
                self._rebuild(mid, entry.record.app)

    def _rebuild(self, mid: str, app: str) -> None:
        entry = self._entries.get(mid)
        machines = self._by_app.setdefault(app, {})
        machine = None
        if entry is not None and entry.record is not None:
            machine = _machine(entry, self._placement(entry.record.host_id))
        if machine is None:
            machines.pop(mid, None)
            self._by_id.pop(mid, None)
        else:
            machines[mid] = machine
            self._by_id[mid] = machine

    async def _bump(self) -> None:
        async with self._changed:
            self.version += 1
            self._changed.notify_all()


def _services(record: MachineRecord | None) -> tuple[tuple[Service, ...], str]:
    if record is None:
        return (), ""
    try:
        config = MachineConfig.model_validate(record.config)
    except ValidationError:
        return (), ""
    services = tuple(Service.from_config(s) for s in config.services or ())
    return services, (config.env or {}).get("PRIMARY_REGION", "")


def _http_service(services: tuple[Service, ...]) -> Service | None:
    """The service the HTTP listener serves: the one on port 80, else the first."""
    http = [s for s in services if s.http]
    on_80 = [s for s in http if any(p.port == 80 and p.http for p in s.ports)]
    return (on_80 or http or [None])[0]


def _toggle(names: set[str], name: str, present: bool) -> None:
    if present:
        names.add(name)
    else:
        names.discard(name)


def _proxy_address(host: str, value: str) -> tuple[str, int] | None:
    try:
        address = ProxyRecord.from_json(value).address
        name, _, port = address.rpartition(":")
        return name.strip("[]"), int(port)
    except (ValueError, TypeError) as exc:
        log.warning("catalog: ignoring the unreadable proxy record of host %s: %s", host, exc)
        return None


def _machine(entry: _Entry, placement: Placement) -> Machine | None:
    record, status = entry.record, entry.status
    if record is None or record.desired == "destroyed":
        return None
    state = status.state if status else "created"
    if state == "destroyed":
        return None
    if state == "started" and record.desired in ("stopped", "suspended"):
        # Ordered down but its agent has not got there yet (autostop, a standby taking
        # over while its host was away): no new traffic, and nothing to wake either.
        state = "stopping"
    checks = status.checks if status else []
    # Only service checks steer routing; a check not run yet does not block traffic.
    healthy = not any(
        c.get("name", "").startswith("servicecheck-") and c.get("status") == "critical"
        for c in checks
    )
    return Machine(
        http=_http_service(entry.services),
        id=record.id,
        app=record.app,
        region=record.region,
        state=state,
        address=record.ipv4,
        cordoned=record.cordoned,
        services=entry.services,
        healthy=healthy,
        primary_region=entry.primary_region,
        host_id=record.host_id,
        local=placement[0],
        reachable=placement[1],
        backhaul=placement[2],
    )
