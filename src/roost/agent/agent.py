"""The host agent: registers the host, watches the store for its machines, and runs a
supervisor per machine (and, beside them, its volumes: ``roost.agent.volumes``).

Every watcher lists at revision R and watches from R + 1; if the store compacted past
its revision it lists again, so no change is ever missed. On start the agent first
re-attaches to machines that outlived its previous run (through the driver and the
journal), then reaps local leftovers the store no longer knows, and only then follows
new changes — so a restart neither duplicates nor orphans a machine.

Liveness and fencing: every registration takes a new host *epoch* and puts it in
``/alive/{host}`` on a TTL lease; status writes only land while that key still holds
the agent's epoch. An agent whose lease expired (a partition, a hang, a drill) is
declared lost by the controller, which may start standbys elsewhere; when the agent is
heard again its writes are refused, so it joins again under a new epoch, re-lists its
machines from the store (where standbys may have replaced them) and only then goes on.

    registered ──lease lost──▶ rejoining ──registered (epoch+1), re-listed──▶ registered
        │                                                                       ▲
        └──isolate() (drill)──▶ isolated ──restore()──────────────────────────┘
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from roost.agent.metrics import MachineView
from roost.agent.supervisor import AgentContext, Supervisor, forget_ops
from roost.api.views import rfc3339
from roost.store import Compacted, Compare, LeaseNotFound, Put, StoreError
from roost.store.records import (
    Command,
    HostRecord,
    MachineRecord,
    MachineStatus,
    alive_key,
    commands_prefix,
    host_key,
    machines_prefix,
    status_prefix,
)

log = logging.getLogger("roost.agent")

ALIVE_TTL = 5.0
"""How long a silent host stays alive in the store: the floor of failure detection."""
RETRY_DELAY = 1.0
KEEP_DESTROYED = 3600.0
"""How long a destroyed machine stays listable (``include_deleted``) before it is gone."""
JANITOR_INTERVAL = 600.0


class Agent:
    def __init__(self, ctx: AgentContext, *, alive_ttl: float = ALIVE_TTL) -> None:
        self.ctx = ctx
        self._alive_ttl = alive_ttl
        self._supervisors: dict[str, Supervisor] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._lease = 0
        self._synced = asyncio.Event()
        self.isolated = False

    @property
    def host(self) -> HostRecord:
        return self.ctx.host

    def machines(self) -> list[MachineView]:
        """The machines this agent supervises, as metrics see them."""
        return [s.view() for s in self._supervisors.values() if not s.done]

    async def start(self) -> None:
        await self._register()
        self._start_loops()
        await self._synced.wait()

    async def stop(self) -> None:
        """Stop supervising; machines keep running and are adopted by the next agent."""
        await self._stop_loops()
        for supervisor in self._supervisors.values():
            await supervisor.close()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._supervisors.clear()
        self._tasks.clear()
        if self.ctx.tailer is not None:
            self.ctx.tailer.close()
        if self._lease:
            with contextlib.suppress(StoreError):
                await self.ctx.store.revoke_lease(self._lease)

    def _start_loops(self) -> None:
        self._synced.clear()
        self._loops = [
            asyncio.create_task(self._machines_loop(), name="agent-machines"),
            asyncio.create_task(self._commands_loop(), name="agent-commands"),
            asyncio.create_task(self._keepalive_loop(), name="agent-keepalive"),
            asyncio.create_task(self._janitor_loop(), name="agent-janitor"),
        ]
        if self.ctx.volumes is not None:
            self._loops.append(asyncio.create_task(self.ctx.volumes.run(), name="agent-volumes"))

    async def _stop_loops(self) -> None:
        current = asyncio.current_task()
        loops = [task for task in self._loops if task is not current]
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        self._loops = []

    # -- drills -------------------------------------------------------------------------

    async def isolate(self) -> None:
        """Behave as if cut off from the fleet: stop renewing liveness and stop following
        the store. Machines keep running, as they would behind a real partition."""
        if self.isolated:
            return
        self.isolated = True
        await self._stop_loops()
        log.warning("host %s isolated for a drill; its liveness lease will expire", self.host.id)

    async def restore(self) -> None:
        """End a drill's isolation: join again as a returning host would."""
        if not self.isolated:
            return
        self.isolated = False
        await self._register()
        self._start_loops()
        await self._synced.wait()
        self._republish()
        log.info("host %s back from isolation (epoch %d)", self.host.id, self.host.epoch)

    # -- registration -------------------------------------------------------------------

    async def _register(self) -> None:
        """Join under a new epoch: the host record first, then the liveness key."""
        store = self.ctx.store
        key = host_key(self.host.id)
        while True:
            existing = await store.get(key)
            if existing is not None:
                previous = HostRecord.from_json(existing.value)
                self.ctx.host.epoch = previous.epoch + 1
                self.ctx.host.cordoned = previous.cordoned
            self.ctx.host.registered_at = rfc3339(self.ctx.clock())
            self.ctx.host.lost_at = ""
            unchanged = [Compare.unchanged(existing, key)]
            if (await store.txn(unchanged, [Put(key, self.host.to_json())])).succeeded:
                break
        self._lease = await store.grant_lease(self._alive_ttl)
        await store.put(alive_key(self.host.id), str(self.host.epoch), lease=self._lease)

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self._alive_ttl / 3)
            try:
                await self.ctx.store.keepalive(self._lease)
            except LeaseNotFound:
                await self._rejoin()
                return  # _rejoin started a fresh keepalive loop
            except StoreError:
                # The store is unreachable: machines keep running; if it stays away past
                # the TTL the lease is gone when it returns, and we join again then.
                log.warning("host liveness not renewed: store unavailable")

    async def _rejoin(self) -> None:
        """Our lease expired, so the fleet took us for lost: join as a returning host."""
        log.warning("host %s: liveness lease lost; joining again under a new epoch", self.host.id)
        await self._stop_loops()
        while True:
            try:
                await self._register()
                break
            except StoreError:
                await asyncio.sleep(RETRY_DELAY)
        self._start_loops()
        await self._synced.wait()
        self._republish()

    def _republish(self) -> None:
        """Write every machine's status again under the current epoch (writes made under
        the old one were refused)."""
        for supervisor in self._supervisors.values():
            if not supervisor.done:
                supervisor.republish()

    # -- forgetting destroyed machines ----------------------------------------------------

    async def _janitor_loop(self) -> None:
        while True:
            try:
                await self.forget_destroyed()
            except StoreError:
                log.warning("janitor: store unavailable; trying again later")
            await asyncio.sleep(JANITOR_INTERVAL)

    async def forget_destroyed(self) -> list[str]:
        """Remove destroyed machines of this host from the store (and their logs) once
        they have been visible as destroyed for ``KEEP_DESTROYED`` seconds."""
        store = self.ctx.store
        cutoff = rfc3339(self.ctx.clock() - KEEP_DESTROYED)
        forgotten = []
        for kv in (await store.range(status_prefix())).kvs:
            status = MachineStatus.from_json(kv.value)
            if status.state != "destroyed" or status.host_id != self.host.id:
                continue
            if status.updated_at > cutoff:
                continue
            app, mid = kv.key.removeprefix(status_prefix()).split("/", 1)
            unchanged = [Compare(kv.key, "mod_revision", "==", kv.mod_revision)]
            if (await store.txn(unchanged, forget_ops(app, mid))).succeeded:
                forgotten.append(mid)
                if self.ctx.logs is not None:
                    self.ctx.logs.remove(mid)
        return forgotten

    # -- machines -----------------------------------------------------------------------

    async def _machines_loop(self) -> None:
        store = self.ctx.store
        first = True
        while True:
            try:
                listing = await store.range(machines_prefix())
                statuses = {
                    kv.key.removeprefix(status_prefix()): MachineStatus.from_json(kv.value)
                    for kv in (await store.range(status_prefix())).kvs
                }
                mine: dict[str, MachineRecord] = {}
                for kv in listing.kvs:
                    record = MachineRecord.from_json(kv.value)
                    if record.host_id == self.host.id:
                        mine[record.id] = record
                        self._dispatch(record, statuses.get(f"{record.app}/{record.id}"))
                for mid, supervisor in list(self._supervisors.items()):
                    if mid not in mine:
                        supervisor.update(None)
                if first:
                    await self._reap(mine)
                    first = False
                    self._synced.set()
                async for event in store.watch(machines_prefix(), listing.revision + 1):
                    if event.type == "put":
                        record = MachineRecord.from_json(event.kv.value)
                        if record.host_id == self.host.id:
                            self._dispatch(record, None)
                    else:
                        mid = event.kv.key.rsplit("/", 1)[1]
                        if mid in self._supervisors:
                            self._supervisors[mid].update(None)
            except Compacted:
                continue
            except Exception:
                # Whatever broke the watch, the agent must not stop following its machines.
                log.exception("watching machines failed; listing again")
                await asyncio.sleep(RETRY_DELAY)

    def _dispatch(self, record: MachineRecord, status: MachineStatus | None) -> None:
        supervisor = self._supervisors.get(record.id)
        if supervisor is not None and not supervisor.done:
            supervisor.update(record)
            return
        finished = status is not None and status.state == "destroyed"
        if record.desired == "destroyed" and finished:
            return
        if supervisor is not None and record.desired == "destroyed":
            return
        supervisor = Supervisor(self.ctx, record, status)
        self._supervisors[record.id] = supervisor
        self._tasks[record.id] = asyncio.create_task(
            self._supervise(supervisor), name=f"machine-{record.id}"
        )

    async def _supervise(self, supervisor: Supervisor) -> None:
        # A supervisor that fails (the store briefly unavailable, a bug) starts over:
        # its run begins by re-attaching to the machine and resuming the journal.
        while not supervisor.done:
            try:
                await supervisor.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("machine %s: supervisor failed; retrying", supervisor.machine_id)
                await self.ctx.sleep(RETRY_DELAY)

    async def _reap(self, mine: dict[str, MachineRecord]) -> None:
        """Remove local machines the store does not place on this host any more."""
        journal = self.ctx.journal
        for mid, run in journal.active().items():
            if mid not in mine:
                journal.finish(run, "abandoned", "machine no longer assigned to this host")
        if self.ctx.logs is not None:
            for mid in self.ctx.logs.machines():
                if mid not in mine:
                    self.ctx.logs.remove(mid)
        for mid in self.ctx.driver.known():
            if mid in mine:
                continue
            log.warning("machine %s: not in the store; destroying its leftovers", mid)
            await self.ctx.driver.destroy(mid)
            if self.ctx.networks is not None:
                await self.ctx.networks.delete(mid)

    # -- commands -------------------------------------------------------------------------

    async def _commands_loop(self) -> None:
        store = self.ctx.store
        prefix = commands_prefix(self.host.id)
        while True:
            try:
                listing = await store.range(prefix)
                for kv in listing.kvs:
                    await self._command(kv.key, kv.value)
                async for event in store.watch(prefix, listing.revision + 1):
                    if event.type == "put":
                        await self._command(event.kv.key, event.kv.value)
            except Compacted:
                continue
            except Exception:
                log.exception("watching commands failed; listing again")
                await asyncio.sleep(RETRY_DELAY)

    async def _command(self, key: str, value: str) -> None:
        command = Command.from_json(value)
        mid = key.removeprefix(commands_prefix(self.host.id)).split("/", 1)[0]
        supervisor = self._supervisors.get(mid)
        if supervisor is not None and command.type == "signal":
            try:
                await supervisor.signal(command.signal)
            except Exception:
                log.exception("machine %s: signal %s failed", mid, command.signal)
        await self.ctx.store.delete(key)
