"""One machine on this host: applies its desired generations and watches its process.

Everything that happens to a machine goes through its supervisor's single loop, so
user actions, process exits, restarts and health results never race each other:

    loop:
      an unfinished run in the journal?      → resume it at its step
      a desired generation not applied yet?  → plan a run for it and execute it
      the process exited on its own?         → record the exit, apply the restart policy
      otherwise                              → sleep until one of those happens

A run is a plan (a fixed tuple of idempotent steps) journalled step by step. The
machine's state only moves through ``roost.spec.states.transition``; every move is
written to the store together with the events it produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from roost.agent import crashpoints
from roost.agent.checks import CheckResult, CheckRunner, machine_checks
from roost.agent.journal import Journal, Run
from roost.agent.launch import LaunchError, launch_spec
from roost.agent.logs import ConsoleTailer, LogStore
from roost.agent.metrics import AgentMetrics, MachineView
from roost.agent.policy import after_exit
from roost.agent.usage import UsageLedger, size_label
from roost.agent.volumes import VolumeAgent, VolumeUnavailable
from roost.api.views import rfc3339
from roost.images.base import Image, ImageError
from roost.runtime.base import Driver, DriverError, ExitStatus, Mount
from roost.spec import ids
from roost.spec.config import MachineConfig
from roost.spec.signals import parse_signal
from roost.spec.states import TRANSIENT, TRANSITIONS, Input, InvalidTransition, transition
from roost.store import Compare, Delete, Put, Store, StoreError
from roost.store.records import (
    Allocation,
    Event,
    HostRecord,
    MachineRecord,
    MachineStatus,
    VolumeRecord,
    alive_key,
    app_key,
    event_key,
    events_prefix,
    hostalloc_key,
    ipam_key,
    lease_key,
    machine_key,
    mid_key,
    status_key,
    versions_prefix,
    volume_key,
)

log = logging.getLogger("roost.agent")

DEFAULT_STOP_SIGNAL = signal.SIGINT
DEFAULT_STOP_TIMEOUT = 5.0
EVENTS_KEPT = 50
PULL_ATTEMPTS = 3
RETRY_AFTER_FAILURE = 5.0
WRITE_RETRY_FIRST = 0.1
WRITE_RETRY_MAX = 2.0

PLANS: dict[str, tuple[str, ...]] = {
    "start": ("pull", "network", "launch"),
    "restart": ("halt", "pull", "network", "launch"),
    "stop": ("halt",),
    "destroy": ("halt", "teardown", "release"),
    "settle": (),
}


class ImagePuller(Protocol):
    async def pull(self, ref: str) -> Image: ...


class Networks(Protocol):
    async def create(self, machine_id: str, index: int) -> Path: ...

    async def delete(self, machine_id: str) -> None: ...


@dataclass
class AgentContext:
    store: Store
    driver: Driver
    images: ImagePuller
    networks: Networks | None
    journal: Journal
    host: HostRecord
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    run_checks: bool = True
    logs: LogStore | None = None
    tailer: ConsoleTailer | None = None
    usage: UsageLedger | None = None
    metrics: AgentMetrics | None = None
    volumes: VolumeAgent | None = None
    """This host's volumes; None where it keeps none (no root, the process driver)."""


class StepFailed(Exception):
    """A step cannot succeed; the run ends and the machine is marked failed."""


class Supervisor:
    def __init__(
        self, ctx: AgentContext, record: MachineRecord, status: MachineStatus | None
    ) -> None:
        self._ctx = ctx
        self._record: MachineRecord | None = record
        self.machine_id = record.id
        self.app = record.app
        self._status = status or MachineStatus(
            state="created", version=record.version, host_id=ctx.host.id
        )
        self._wake = asyncio.Event()
        self._exit: asyncio.Task[ExitStatus] | None = None
        self._started_at = 0.0
        self._checks: CheckRunner | None = None
        self._last_write: asyncio.Task[None] | None = None
        self.done = False

    # -- inputs from the agent ------------------------------------------------------------

    def update(self, record: MachineRecord | None) -> None:
        """The latest desired record from the store (None: the record is gone)."""
        self._record = record
        self._wake.set()

    def view(self) -> MachineView:
        return MachineView(self.machine_id, self.app, self._status.state, self._status.checks)

    async def signal(self, signum: int) -> None:
        if self._exit is not None and not self._exit.done():
            await self._ctx.driver.signal(self.machine_id, signum)

    async def close(self) -> None:
        """Stop supervising (agent shutdown); the machine itself keeps running."""
        await self._stop_checks()
        if self._exit is not None:
            self._exit.cancel()

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        pending = self._ctx.journal.active().get(self.machine_id)
        self._follow_logs()
        await self._recover()
        if pending is not None:
            await self._execute(pending)
        elif self._running() and self._status.state != "started":
            # It runs, whatever the last agent managed to record.
            self._publish("running", [])
        while not self.done:
            record = self._record
            if record is None:
                await self._vanished()
                return
            if record.generation > self._status.generation:
                await self._apply(record)
            elif self._exit is not None and self._exit.done():
                await self._exited(record)
            else:
                await self._idle()

    def _follow_logs(self) -> None:
        tailer, record = self._ctx.tailer, self._record
        if tailer is None or self._status.state == "destroyed":
            return
        paths = self._ctx.driver.log_paths(self.machine_id)
        # Following creates the machine's directory: one whose teardown already removed
        # it (an agent killed mid-destroy) has nothing left to tail.
        directory = next(iter(paths.values())).parent
        if record is not None and record.desired == "destroyed" and not directory.exists():
            return
        tailer.follow(self.machine_id, paths)

    async def _idle(self) -> None:
        self._wake.clear()
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if self._exit is not None:
            waits.append(self._exit)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waits[0].cancel()

    async def _recover(self) -> None:
        """Re-attach to a process that outlived the previous agent."""
        inspection = await self._ctx.driver.recover(self.machine_id)
        if inspection.state == "running":
            self._watch_exit()
            self._started_at = inspection.started_at or self._ctx.clock()
            self._start_checks()
        elif self._status.state in ("started", "starting"):
            # It was running when the previous agent died and ended since (or the host
            # rebooted): treat that like any exit. If no newer order waits, the restart
            # policy applies; if one does (say, stopped while the host was lost), the
            # exit is recorded before the order is carried out.
            exit_status = inspection.exit or ExitStatus(exit_code=255, exited_at=self._ctx.clock())
            loop = asyncio.get_running_loop()
            self._exit = loop.create_future()  # type: ignore[assignment]
            self._exit.set_result(exit_status)  # type: ignore[union-attr]

    # -- planning -------------------------------------------------------------------------

    def _running(self) -> bool:
        return self._exit is not None and not self._exit.done()

    def _plan(self, record: MachineRecord) -> str:
        running = self._running()
        if record.desired == "destroyed":
            return "destroy"
        if record.desired in ("stopped", "suspended"):
            return "stop" if running else "settle"
        if record.action in ("restart", "update"):
            return "restart"
        if running and self._status.version != record.version:
            return "restart"
        return "settle" if running else "start"

    async def _apply(self, record: MachineRecord) -> None:
        if self._exit is not None and self._exit.done():
            # The process ended on its own just as a new order came in: record that
            # exit first so no exit goes unreported, without applying the policy.
            await self._record_exit(self._exit.result(), requested=False)
            # A newer order may have come in meanwhile: plan for that one.
            if self._record is None:
                return
            record = self._record
        run = Run(self.machine_id, self.app, record.generation, self._plan(record))
        self._ctx.journal.begin(run)
        await self._execute(run)

    # -- execution ------------------------------------------------------------------------

    async def _execute(self, run: Run) -> None:
        record = self._record
        if record is None:
            self._ctx.journal.finish(run, "abandoned", "machine record vanished")
            return
        steps = PLANS[run.plan]
        try:
            if run.step == 0:
                await self._begin(run, record)
                crashpoints.reached(run.plan, "begun")
            while run.step < len(steps):
                step = steps[run.step]
                await getattr(self, f"_step_{step}")(run, record)
                crashpoints.reached(run.plan, step)
                self._ctx.journal.advance(run)
                crashpoints.reached(run.plan, step, "journalled")
            # The journal may close the run before its outcome is stored: if that write
            # is lost, the generation is simply applied again, and every step is
            # idempotent.
            write = self._end(run, record)
            self._ctx.journal.finish(run, "done")
            crashpoints.reached(run.plan, "finished")
            if write is not None:
                await write
        except StepFailed as exc:
            log.warning("machine %s: %s failed: %s", self.machine_id, run.plan, exc)
            await self._fail(run, record, str(exc))
            self._ctx.journal.finish(run, "failed", str(exc))

    async def _begin(self, run: Run, record: MachineRecord) -> None:
        source = "flyd" if run.payload.get("policy") else "user"
        events: list[Event] = []
        move: Input | None = None
        if run.plan == "destroy":
            move = "destroy"
        elif run.plan == "stop":
            move = "suspend" if record.desired == "suspended" and self._can_suspend() else "stop"
        elif run.plan == "restart" and record.action == "update":
            move = "update"
            events.append(self._event("update", "replacing", source))
        elif run.plan == "restart" and self._running():
            move = "restart"
            events.append(self._event("restart", "restarting", source))
        elif run.plan in ("start", "restart"):
            move = "start"
            if source == "flyd":
                events.append(self._event("restart", "starting", "flyd"))
            elif record.action == "launch" and record.generation == 1:
                events.append(self._event("launch", "created", "user"))
        # Not awaited: the steps need not wait for "starting" to be stored, and the
        # write chain keeps it ahead of whatever the run writes next.
        if move is not None or events:
            self._publish(move, events)

    def _end(self, run: Run, record: MachineRecord) -> asyncio.Task[None] | None:
        """Publish the run's outcome; the caller awaits the returned write."""
        source = "flyd" if run.payload.get("policy") else "user"
        # The run's own generation, never the record's: an order that arrived during the
        # run (the record moved on) must still find its generation not yet applied.
        generation = run.generation
        exit_info = run.payload.get("exit")
        if run.plan in ("start", "restart"):
            events = [self._exit_event(exit_info)] if exit_info else []
            # As on Fly: the platform reports a start done and an exit, whoever asked.
            events.append(self._event("start", "started", "flyd"))
            return self._publish(
                "running",
                events,
                generation=generation,
                version=record.version,
                image_ref=run.payload.get("image_ref", self._status.image_ref),
                restart_count=run.payload.get("restart_count", 0),
                last_exit=exit_info or self._status.last_exit,
                checks=[r.wire() for r in self._checks.results] if self._checks else [],
            )
        if run.plan == "stop":
            events = []
            if exit_info:
                events.append(self._exit_event(exit_info))
            suspended = record.desired == "suspended"
            message = ""
            if suspended and not self._can_suspend():
                message = (
                    f"the {self._ctx.driver.name} driver cannot snapshot machines; "
                    "the machine was stopped instead of suspended"
                )
            kind = "suspend" if suspended else "stop"
            status = "suspended" if suspended and self._can_suspend() else "stopped"
            events.append(self._event(kind, status, source, message=message))
            settling = self._status.state in ("stopping", "suspending")
            return self._publish(
                "exited" if settling else None,
                events,
                generation=generation,
                version=record.version,
                last_exit=exit_info or self._status.last_exit,
            )
        if run.plan == "settle":
            events = []
            if record.action == "launch" and record.generation == 1:
                events.append(self._event("launch", "created", "user"))
            elif record.action == "update":
                events.append(self._event("update", "replaced", "user"))
            # Nothing to do but make the record say what is true.
            move: Input | None = None
            if self._running() and self._status.state != "started":
                move = "running"
            elif not self._running() and self._status.state in TRANSIENT:
                move = "exited"
            return self._publish(move, events, generation=generation, version=record.version)
        self.done = True
        return None

    async def _fail(self, run: Run, record: MachineRecord, message: str) -> None:
        await self._stop_checks()
        if run.plan in ("start", "restart"):
            kind = "launch" if record.action == "launch" else "start"
            await self._publish(
                "start_failed",
                [self._event(kind, "failed", "flyd", message=message)],
                generation=run.generation,
                version=record.version,
            )
            return
        # Stopping or destroying must eventually happen: report, back off, and let the
        # loop try the same generation again.
        await self._publish(None, [self._event(run.plan, "failed", "flyd", message=message)])
        await self._ctx.sleep(RETRY_AFTER_FAILURE)

    # -- steps (each idempotent: it may run again after a crash) --------------------------

    async def _step_halt(self, run: Run, record: MachineRecord) -> None:
        if not self._running():
            return
        config = _config(record)
        stop = config.stop_config
        signum = record.stop_signal or (
            parse_signal(stop.signal) if stop and stop.signal else DEFAULT_STOP_SIGNAL
        )
        timeout = record.stop_timeout
        if timeout is None:
            timeout = stop.timeout if stop and stop.timeout is not None else DEFAULT_STOP_TIMEOUT
        await self._stop_checks()
        began = time.monotonic()
        try:
            exit_status = await self._ctx.driver.stop(self.machine_id, signum, timeout)
        except DriverError as exc:
            raise StepFailed(f"stopping the machine failed: {exc}") from exc
        if self._ctx.metrics is not None:
            self._ctx.metrics.stop_seconds.observe(time.monotonic() - began)
        self._exit = None
        if exit_status is not None:
            run.payload["exit"] = _exit_info(exit_status, requested=True, ran_for=self._ran_for())

    async def _step_pull(self, run: Run, record: MachineRecord) -> None:
        config = _config(record)
        # Starting an existing version again uses the digest it first resolved to, so a
        # moved tag never changes what a restart runs, and no registry is needed.
        ref = config.image
        pinned = self._status.image_ref
        if record.version == self._status.version and pinned.get("digest"):
            ref = _pinned_reference(pinned)
        image = await self._pull(ref)
        run.payload["image_ref"] = _image_ref_view(image)
        run.payload["image"] = str(image.ref)

    async def _pull(self, ref: str) -> Image:
        metrics = self._ctx.metrics
        for attempt in range(PULL_ATTEMPTS):
            began = time.monotonic()
            try:
                image = await self._ctx.images.pull(ref)
            except ImageError as exc:
                if metrics is not None:
                    metrics.image_pulls.inc("failed")
                if attempt == PULL_ATTEMPTS - 1:
                    raise StepFailed(f"could not pull image {ref}: {exc}") from exc
                await self._ctx.sleep(0.5 * 2**attempt)
                continue
            if metrics is not None:
                metrics.image_pulls.inc("ok")
                metrics.image_pull_seconds.observe(time.monotonic() - began)
            return image
        raise AssertionError("unreachable")

    async def _step_network(self, run: Run, record: MachineRecord) -> None:
        if self._ctx.networks is None:
            return
        try:
            path = await self._ctx.networks.create(self.machine_id, record.ip_index)
        except Exception as exc:
            raise StepFailed(f"could not set up the machine's network: {exc}") from exc
        run.payload["netns"] = str(path)

    async def _step_launch(self, run: Run, record: MachineRecord) -> None:
        driver = self._ctx.driver
        inspection = await driver.inspect(self.machine_id)
        if inspection.state == "running":
            # Started before a crash: adopt it rather than start a second copy.
            await driver.recover(self.machine_id)
        else:
            image = await self._pull(run.payload["image"])
            config = _config(record)
            netns = Path(run.payload["netns"]) if run.payload.get("netns") else None
            began = time.monotonic()
            try:
                async with self._volume_mounts(config) as mounts:
                    spec = launch_spec(record, config, image, netns=netns, mounts=mounts)
                    await driver.prepare(spec)
                    inspection = await driver.start(self.machine_id)
            except (LaunchError, DriverError, VolumeUnavailable) as exc:
                raise StepFailed(str(exc)) from exc
            if self._ctx.metrics is not None:
                self._ctx.metrics.start_seconds.observe(time.monotonic() - began)
        self._started_at = inspection.started_at or self._ctx.clock()
        self._watch_exit()
        self._start_checks()

    @contextlib.asynccontextmanager
    async def _volume_mounts(self, config: MachineConfig) -> AsyncIterator[tuple[Mount, ...]]:
        """The machine's volume, held (see ``VolumeAgent.held``) until it has started."""
        wanted = config.mounts or []
        if not wanted:
            yield ()
            return
        if self._ctx.volumes is None:
            raise VolumeUnavailable(
                "this host keeps no volumes (they need root and the runc driver)"
            )
        async with contextlib.AsyncExitStack() as held:
            mounts = []
            for mount in wanted:
                source = await held.enter_async_context(self._ctx.volumes.held(mount.volume or ""))
                mounts.append(Mount(source, mount.path))
            yield tuple(mounts)

    async def _step_teardown(self, run: Run, record: MachineRecord) -> None:
        await self._stop_checks()
        try:
            await self._ctx.driver.destroy(self.machine_id)
            if self._ctx.networks is not None:
                await self._ctx.networks.delete(self.machine_id)
        except Exception as exc:
            # Retried by the next agent start; the machine is already stopped.
            log.exception("machine %s: teardown failed", self.machine_id)
            raise StepFailed(f"teardown failed: {exc}") from exc
        self._exit = None

    async def _step_release(self, run: Run, record: MachineRecord) -> None:
        """Give back the address, capacity and volume, and record the machine as
        destroyed."""
        store = self._ctx.store
        if self._last_write is not None:
            # Earlier status writes must not land after "destroyed".
            await asyncio.wait([self._last_write])
        app_exists = await store.get(app_key(self.app)) is not None
        while True:
            alloc_key = hostalloc_key(record.host_id)
            alloc_kv = await store.get(alloc_key)
            allocation = Allocation.from_json(alloc_kv.value) if alloc_kv else Allocation()
            guest = _config(record).resolved_guest
            released = dataclasses.replace(
                allocation,
                cpus=max(0, allocation.cpus - guest.cpu_slots),
                memory_mb=max(0, allocation.memory_mb - guest.memory_mb),
                machines=max(0, allocation.machines - 1),
            )
            ops: list[Put | Delete] = [Put(alloc_key, released.to_json())]
            ipam_kv = await store.get(ipam_key(record.ip_index))
            if ipam_kv is not None and ipam_kv.value == self.machine_id:
                ops.append(Delete(ipam_key(record.ip_index)))
            ops.append(Delete(lease_key(self.app, self.machine_id)))
            compares = [Compare.unchanged(alloc_kv, alloc_key)]
            for volume_id in _volumes(record):
                detach = await self._detach(volume_id)
                if detach is not None:
                    compares.append(detach[0])
                    ops.append(detach[1])
            if app_exists:
                event = self._event("destroy", "destroyed", "user")
                destroyed = self._moved("destroyed", generation=run.generation, event_id=event.id)
                ops.append(Put(status_key(self.app, self.machine_id), destroyed.to_json()))
                ops.append(Put(event_key(self.app, self.machine_id, event.id), event.to_json()))
            else:
                # The app is gone: nothing will ever list this machine again.
                ops.extend(self._forget_ops())
            if (await store.txn(compares, ops)).succeeded:
                break
        if app_exists:
            self._status = self._moved("destroyed", generation=run.generation)
        if self._ctx.usage is not None:
            self._ctx.usage.record(self.machine_id, self.app, "destroyed", "")
        if self._ctx.tailer is not None:
            self._ctx.tailer.stop(self.machine_id)
        if self._ctx.logs is not None:
            self._ctx.logs.event(self.machine_id, "destroy: destroyed")

    async def _detach(self, volume_id: str) -> tuple[Compare, Put] | None:
        key = volume_key(self.app, volume_id)
        kv = await self._ctx.store.get(key)
        if kv is None:
            return None
        volume = VolumeRecord.from_json(kv.value)
        if volume.attached_machine_id != self.machine_id:
            return None
        detached = dataclasses.replace(volume, attached_machine_id=None)
        return Compare.unchanged(kv, key), Put(key, detached.to_json())

    def _forget_ops(self) -> list[Put | Delete]:
        return forget_ops(self.app, self.machine_id)

    # -- exits and the restart policy ----------------------------------------------------

    async def _exited(self, record: MachineRecord) -> None:
        assert self._exit is not None
        exit_status = self._exit.result()
        self._exit = None
        await self._stop_checks()
        ran_for = self._ran_for(exit_status.exited_at)
        config = _config(record)
        decision = after_exit(config, exit_status.exit_code, self._status.restart_count, ran_for)
        await self._record_exit(
            exit_status, requested=False, restarting=decision.action == "restart"
        )
        if decision.action == "restart":
            if decision.delay:
                self._wake.clear()
                try:
                    async with asyncio.timeout(decision.delay):
                        await self._wake.wait()
                    return  # a new order arrived during the backoff; it wins
                except TimeoutError:
                    pass
            run = Run(self.machine_id, self.app, record.generation, "start")
            run.payload["policy"] = True
            run.payload["restart_count"] = decision.restart_count
            self._ctx.journal.begin(run)
            await self._execute(run)
        elif decision.action == "destroy":
            await self._auto_destroy()
        else:
            await self._publish(None, [], restart_count=decision.restart_count)

    async def _record_exit(
        self, exit_status: ExitStatus, *, requested: bool, restarting: bool = False
    ) -> None:
        info = _exit_info(exit_status, requested=requested, ran_for=self._ran_for())
        info["restarting"] = restarting
        self._exit = None
        await self._publish("exited", [self._exit_event(info)], last_exit=info)

    async def _auto_destroy(self) -> None:
        store = self._ctx.store
        key = machine_key(self.app, self.machine_id)
        while True:
            kv = await store.get(key)
            if kv is None:
                return
            record = MachineRecord.from_json(kv.value)
            if record.desired == "destroyed":
                return
            destroyed = dataclasses.replace(
                record,
                desired="destroyed",
                generation=record.generation + 1,
                action="destroy",
                updated_at=rfc3339(self._ctx.clock()),
            )
            compare = [Compare(key, "mod_revision", "==", kv.mod_revision)]
            if (await store.txn(compare, [Put(key, destroyed.to_json())])).succeeded:
                self.update(destroyed)
                return

    async def _vanished(self) -> None:
        """The record was deleted under us: remove whatever still runs here."""
        await self._stop_checks()
        await self._ctx.driver.destroy(self.machine_id)
        if self._ctx.networks is not None:
            await self._ctx.networks.delete(self.machine_id)
        self.done = True

    def _watch_exit(self) -> None:
        self._exit = asyncio.ensure_future(self._ctx.driver.wait(self.machine_id))

    def _ran_for(self, until: float | None = None) -> float:
        return max(0.0, (until or self._ctx.clock()) - self._started_at)

    def _can_suspend(self) -> bool:
        return self._ctx.driver.capabilities().suspend

    # -- checks -----------------------------------------------------------------------------

    def _start_checks(self) -> None:
        record = self._record
        if not self._ctx.run_checks or record is None or self._checks is not None:
            return
        checks = machine_checks(_config(record))
        if not checks:
            return
        address = record.ipv4 if self._ctx.networks is not None else "127.0.0.1"
        self._checks = CheckRunner(
            checks,
            address,
            self._checks_changed,
            stamp=lambda: rfc3339(self._ctx.clock()),
            sleep=self._ctx.sleep,
        )
        self._checks.start()

    async def _stop_checks(self) -> None:
        if self._checks is not None:
            runner, self._checks = self._checks, None
            await runner.stop()

    async def _checks_changed(self, results: list[CheckResult]) -> None:
        if self._checks is None:
            return
        await self._publish(None, [], checks=[r.wire() for r in results])

    # -- status and events --------------------------------------------------------------------

    def _moved(self, state: str, **changes: Any) -> MachineStatus:
        return dataclasses.replace(
            self._status,
            state=state,
            host_id=self._ctx.host.id,
            epoch=self._ctx.host.epoch,
            updated_at=rfc3339(self._ctx.clock()),
            **changes,
        )

    def _publish(
        self, move: Input | None, events: list[Event], **changes: Any
    ) -> asyncio.Task[None]:
        """Apply a transition now and write the new status with its events, atomically.

        The in-memory status moves at once; the store writes are chained, so they land in
        the order they were made even when a caller does not wait for its own write.
        """
        state = self._status.state
        if move is not None:
            try:
                moved = transition(state, move)
            except InvalidTransition:
                log.error("machine %s: %s is final; ignoring %s", self.machine_id, state, move)
            else:
                if (state, move) not in TRANSITIONS:
                    log.warning(
                        "machine %s: recorded %s, then %s: now %s",
                        self.machine_id,
                        state,
                        move,
                        moved,
                    )
                state = moved
        if state not in ("started", "starting") and "checks" not in changes:
            changes["checks"] = []
        if events:
            changes["event_id"] = events[-1].id
        self._status = self._moved(state, **changes)
        if self._ctx.usage is not None and self._record is not None:
            guest = _config(self._record).resolved_guest
            size = size_label(guest.cpu_kind, guest.cpus, guest.memory_mb)
            self._ctx.usage.record(self.machine_id, self.app, state, size)
        ops: list[Put | Delete] = [
            Put(status_key(self.app, self.machine_id), self._status.to_json())
        ]
        ops += [Put(event_key(self.app, self.machine_id, e.id), e.to_json()) for e in events]
        if self._ctx.logs is not None and events:
            self._ctx.logs.append(
                self.machine_id, [(e.timestamp / 1000, "event", describe(e)) for e in events]
            )
        previous = self._last_write
        epoch = self._status.epoch

        async def write() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            if await self._write_fenced(ops, epoch) and events:
                await self._trim_events()

        self._last_write = asyncio.ensure_future(write())
        return self._last_write

    def republish(self) -> None:
        """Write the current status again (the agent joined under a new epoch)."""
        self._publish(None, [])

    async def _write_fenced(self, ops: list[Put | Delete], epoch: int) -> bool:
        """Write while this host still holds ``epoch``; retry while the store is away.

        False when fenced: the fleet declared the host lost since, and the agent will
        republish under its next epoch.
        """
        fence = [Compare(alive_key(self._ctx.host.id), "value", "==", str(epoch))]
        delay = WRITE_RETRY_FIRST
        while True:
            try:
                return (await self._ctx.store.txn(fence, ops)).succeeded
            except StoreError:
                log.warning(
                    "machine %s: status not written yet (store unavailable)", self.machine_id
                )
                await self._ctx.sleep(delay)
                delay = min(delay * 2, WRITE_RETRY_MAX)

    async def _trim_events(self) -> None:
        kvs = (await self._ctx.store.range(events_prefix(self.app, self.machine_id))).kvs
        for kv in kvs[:-EVENTS_KEPT]:
            await self._ctx.store.delete(kv.key)

    def _event(
        self,
        kind: str,
        status: str,
        source: str,
        request: dict[str, Any] | None = None,
        *,
        message: str = "",
    ) -> Event:
        now = self._ctx.clock()
        return Event(
            id=ids.ulid(now),
            type=kind,
            status=status,
            source=source,  # type: ignore[arg-type]
            timestamp=int(now * 1000),
            request=request or {},
            message=message,
        )

    def _exit_event(self, info: dict[str, Any]) -> Event:
        request = {"exit_event": info, "restart_count": self._status.restart_count}
        return self._event("exit", "stopped", "flyd", request)


def forget_ops(app: str, mid: str) -> list[Put | Delete]:
    """Everything the store keeps about a machine, for when it is gone for good."""
    return [
        Delete(machine_key(app, mid)),
        Delete(status_key(app, mid)),
        Delete(events_prefix(app, mid), prefix=True),
        Delete(versions_prefix(app, mid), prefix=True),
        Delete(mid_key(mid)),
    ]


def describe(event: Event) -> str:
    """An event as one log line: ``exit: stopped (exit code 137, oom killed)``."""
    text = f"{event.type}: {event.status}"
    exit_event = event.request.get("exit_event")
    if exit_event:
        details = [f"exit code {exit_event['exit_code']}"]
        if exit_event.get("oom_killed"):
            details.append("oom killed")
        if exit_event.get("requested_stop"):
            details.append("requested")
        if exit_event.get("restarting"):
            details.append("restarting")
        text += f" ({', '.join(details)})"
    if message := event.reason():
        text += f": {message}"
    return text


def _config(record: MachineRecord) -> MachineConfig:
    return MachineConfig.model_validate(record.config)


def _volumes(record: MachineRecord) -> list[str]:
    return [m.volume for m in _config(record).mounts or [] if m.volume]


def _exit_info(exit_status: ExitStatus, *, requested: bool, ran_for: float) -> dict[str, Any]:
    return {
        "exit_code": exit_status.exit_code,
        "guest_exit_code": exit_status.exit_code,
        "guest_signal": exit_status.signal or 0,
        "signal": exit_status.signal or -1,
        "oom_killed": exit_status.oom_killed,
        "requested_stop": requested,
        "restarting": False,
        "exited_at": rfc3339(exit_status.exited_at) if exit_status.exited_at else "",
        "ran_for_s": round(ran_for, 3),
    }


def _image_ref_view(image: Image) -> dict[str, Any]:
    return {
        "registry": image.ref.registry,
        "repository": image.ref.repository,
        "tag": image.ref.tag,
        "digest": image.ref.digest,
        "labels": dict(image.config.labels),
    }


def _pinned_reference(image_ref: dict[str, Any]) -> str:
    base = f"{image_ref['registry']}/{image_ref['repository']}"
    if image_ref.get("tag"):
        base += f":{image_ref['tag']}"
    return f"{base}@{image_ref['digest']}"
