"""Changing an app's machines one safe step at a time, and the deploy strategies.

A step does one thing to one machine — update it (holding its lease, as ``roost
machine update`` does), create it, destroy it — and ``ready`` waits until a machine's
new version is started and its checks pass. The strategies are short compositions of
those steps:

- **rolling**: one machine at a time, each ready before the next; on a failure every
  machine touched so far gets the config it had back.
- **immediate**: every machine at once, waiting only for them to start.
- **canary**: per process group, one extra machine on the new config must get ready
  (and is destroyed again) before a rolling update.
- **bluegreen**: a new machine beside every old one, out of the proxy's rotation until
  all are ready; then the new ones take the traffic and the old ones go. A failure
  removes the new ones and leaves the old ones serving.

Stopped machines stay stopped (``skip_launch``), so nothing is waited for on them.
Every step prints one line as it happens and notes its result for the summary.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import click

from roost.cli.client import Client, ClientError, JSONObject, held_lease
from roost.cli.output import table
from roost.cli.release import BLUEGREEN_TAG, Launch, Update, standby_config
from roost.cli.views import event_info
from roost.cli.wait import DEFAULT_TIMEOUT, Progress, wait_for_state
from roost.spec import ids

CHECKS_POLL = 1.0
"""Seconds between looks at a machine's checks (the API has no wait for them)."""
LAUNCH_STATES = ("started", "stopped", "failed", "destroyed")
NOT_RUNNING = ("stopped", "suspended", "failed", "destroyed")
NO_VERSION = "-"


@dataclass(frozen=True)
class Clock:
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


CLOCK = Clock()
"""The clock rollouts wait by; tests swap it for one that never sleeps."""


@dataclass(frozen=True)
class Pace:
    timeout: float = DEFAULT_TIMEOUT
    """Seconds each machine gets to start and pass its checks."""
    poll: float = CHECKS_POLL
    clock: Clock = field(default_factory=lambda: CLOCK)


class StepFailed(Exception):
    """A machine did not get where the step took it; ``aftermath`` says what was undone."""

    def __init__(self, machine_id: str, reason: str) -> None:
        super().__init__(f"machine {machine_id}: {reason}" if machine_id else reason)
        self.reason = reason
        self.aftermath = ""


@dataclass
class Outcome:
    machine_id: str
    group: str
    region: str
    before: str
    after: str
    notes: list[str]


def expects_checks(config: JSONObject) -> bool:
    return bool(config.get("checks")) or any(s.get("checks") for s in config.get("services") or [])


class Rollout:
    """The steps, on one app, and the ledger of what they did."""

    def __init__(self, client: Client, app: str, pace: Pace) -> None:
        self.client = client
        self.app = app
        self.pace = pace
        self.outcomes: dict[str, Outcome] = {}

    # -- steps ----------------------------------------------------------------------------

    def track(self, machine: JSONObject, group: str) -> None:
        """Note an existing machine in the ledger, before a step changes it."""
        version = str(machine.get("version", ""))
        self._record(str(machine["id"]), group, str(machine.get("region", "")), version, version)

    def update(self, u: Update) -> str:
        """Give ``u``'s machine its new config; the new version."""
        self.track(u.machine, u.group)
        self._say(u.id, f"updating from version {u.version}")
        try:
            version = self._post(u.id, u.config, current=u.version, skip_launch=u.stays_stopped)
        except StepFailed as exc:
            self._note(u.id, f"update refused: {exc.reason}")
            self._say(u.id, f"update refused: {exc.reason}")
            raise
        self.outcomes[u.id].after = version
        self._note(u.id, "updated, stays stopped" if u.stays_stopped else "updated")
        return version

    def update_and_wait(self, u: Update) -> None:
        version = self.update(u)
        if not u.stays_stopped:
            self.ready(u.id, version, u.config)

    def create(
        self,
        group: str,
        config: JSONObject,
        region: str | None,
        *,
        skip_launch: bool = False,
        cordoned: bool = False,
        note: str = "created",
    ) -> JSONObject:
        request: JSONObject = {"config": config}
        if region:
            request["region"] = region
        if skip_launch:
            request["skip_launch"] = True
        if cordoned:
            request["skip_service_registration"] = True
        try:
            machine = self.client.create_machine(self.app, request)
        except ClientError as exc:
            where = f" in region {region}" if region else ""
            message = f"creating a {group!r} machine{where} failed: {exc.message}"
            raise StepFailed("", message) from None
        mid = str(machine["id"])
        self._record(mid, group, str(machine.get("region", "")), NO_VERSION, machine["version"])
        self._note(mid, note)
        self._say(mid, note)
        return machine

    def destroy(self, machine_id: str, note: str = "destroyed") -> None:
        try:
            with held_lease(self.client, self.app, machine_id) as nonce:
                self.client.destroy_machine(self.app, machine_id, force=True, nonce=nonce)
        except ClientError as exc:
            self._note(machine_id, f"not destroyed: {exc.message}")
            raise StepFailed(machine_id, f"destroying it failed: {exc.message}") from None
        if machine_id in self.outcomes:
            self.outcomes[machine_id].after = NO_VERSION
        self._note(machine_id, note)
        self._say(machine_id, note)

    def cordon(self, machine_id: str, *, cordoned: bool) -> None:
        change = self.client.cordon_machine if cordoned else self.client.uncordon_machine
        try:
            with held_lease(self.client, self.app, machine_id) as nonce:
                change(self.app, machine_id, nonce=nonce)
        except ClientError as exc:
            raise StepFailed(machine_id, f"cordoning it failed: {exc.message}") from None
        self._say(machine_id, "out of the proxy's rotation" if cordoned else "taking traffic")

    def ready(
        self, machine_id: str, version: str, config: JSONObject, *, checks: bool = True
    ) -> None:
        """Until ``version`` is started and (with ``checks``) its checks pass."""
        try:
            self._started(machine_id, version)
            if checks and expects_checks(config):
                self._say(machine_id, "started, waiting for its checks")
                self._healthy(machine_id)
            else:
                self._say(machine_id, "started")
                self._note(machine_id, "started")
        except StepFailed as exc:
            self._note(machine_id, f"failed: {exc.reason}")
            self._say(machine_id, f"failed: {exc.reason}")
            raise

    def roll_back(self, updates: list[Update]) -> None:
        """The machines ``updates`` changed get their previous config back."""
        for u in reversed(updates):
            outcome = self.outcomes.get(u.id)
            if outcome is None or outcome.after == outcome.before:
                continue
            self._say(u.id, "rolling back to its previous config")
            try:
                version = self._post(
                    u.id, u.old_config, current=outcome.after, skip_launch=u.stays_stopped
                )
                outcome.after = version
                self._note(u.id, "rolled back")
                if not u.stays_stopped:
                    self.ready(u.id, version, u.old_config, checks=False)
            except StepFailed as exc:
                self._note(u.id, f"rollback failed: {exc.reason}")

    # -- the summary ----------------------------------------------------------------------

    def summary(self) -> str:
        rows = [
            (o.machine_id, o.group, o.region, f"{o.before} -> {o.after}", ", ".join(o.notes))
            for o in self.outcomes.values()
        ]
        return table(("MACHINE", "GROUP", "REGION", "VERSION", "RESULT"), rows)

    # -- inside the steps -------------------------------------------------------------------

    def _post(self, machine_id: str, config: JSONObject, *, current: str, skip_launch: bool) -> str:
        request: JSONObject = {"config": config, "current_version": current}
        if skip_launch:
            request["skip_launch"] = True
        try:
            with held_lease(self.client, self.app, machine_id) as nonce:
                updated = self.client.update_machine(self.app, machine_id, request, nonce=nonce)
        except ClientError as exc:
            raise StepFailed(machine_id, exc.message) from None
        return str(updated["version"])

    def _started(self, machine_id: str, version: str) -> None:
        try:
            state = wait_for_state(
                self.client,
                self.app,
                machine_id,
                states=LAUNCH_STATES,
                version=version,
                timeout=self.pace.timeout,
                progress=Progress(f"Waiting for machine {machine_id} to start..."),
                clock=self.pace.clock.now,
            )
        except ClientError as exc:
            raise StepFailed(machine_id, exc.message) from None
        if state != "started":
            raise StepFailed(machine_id, f"it is {state} instead of started{self._why(machine_id)}")

    def _healthy(self, machine_id: str) -> None:
        clock = self.pace.clock
        deadline = clock.now() + self.pace.timeout
        progress = Progress(f"Waiting for the checks of machine {machine_id}...")
        try:
            while True:
                try:
                    machine = self.client.get_machine(self.app, machine_id)
                except ClientError as exc:
                    raise StepFailed(machine_id, exc.message) from None
                state, checks = machine.get("state", ""), machine.get("checks") or []
                if state in NOT_RUNNING:
                    why = self._why(machine_id)
                    raise StepFailed(machine_id, f"it is {state} instead of started{why}")
                passing = sum(1 for c in checks if c.get("status") == "passing")
                if checks and passing == len(checks):
                    self._note(machine_id, f"healthy ({passing}/{len(checks)} checks passing)")
                    self._say(machine_id, f"healthy, {passing}/{len(checks)} checks passing")
                    return
                if clock.now() >= deadline:
                    raise StepFailed(machine_id, self._unhealthy(checks))
                progress.show(f"{passing}/{len(checks)} checks passing")
                clock.sleep(self.pace.poll)
        finally:
            progress.finish()

    def _unhealthy(self, checks: list[JSONObject]) -> str:
        within = f"within {self.pace.timeout:g}s"
        if not checks:
            return f"the API reported none of its checks {within}"
        failing = "; ".join(
            f"{c.get('name')}: {c.get('status')}" + (f" ({c['output']})" if c.get("output") else "")
            for c in checks
            if c.get("status") != "passing"
        )
        return f"its checks did not pass {within}: {failing}"

    def _why(self, machine_id: str) -> str:
        try:
            events = self.client.list_events(self.app, machine_id, limit=10)
        except ClientError:
            return ""
        for event in events:
            if info := event_info(event):
                return f" ({info})"
        return ""

    def _record(self, mid: str, group: str, region: str, before: str, after: str) -> None:
        self.outcomes.setdefault(mid, Outcome(mid, group, region, before, after, []))

    def _note(self, machine_id: str, note: str) -> None:
        if machine_id in self.outcomes:
            self.outcomes[machine_id].notes.append(note)

    def _say(self, machine_id: str, text: str) -> None:
        outcome = self.outcomes.get(machine_id)
        where = f" [{outcome.group}, {outcome.region}]" if outcome else ""
        click.echo(f"Machine {machine_id}{where}: {text}")


# -- launching a group, and the strategies ----------------------------------------------------


def launch(r: Rollout, group: Launch) -> None:
    """flyctl's first deploy of a group: its machines, ready, then the standby if any."""
    try:
        machines = [r.create(group.group, group.config, group.region) for _ in range(group.count)]
        for machine in machines:
            r.ready(str(machine["id"]), str(machine["version"]), group.config)
    except StepFailed as exc:
        exc.aftermath = (
            "the machines created so far are left as they are (see `roost status`); "
            "fix the config and deploy again to update them"
        )
        raise
    if group.standby:
        first = str(machines[0]["id"])
        r.create(
            group.group,
            standby_config(group.config, [first]),
            machines[0].get("region") or group.region,
            skip_launch=True,
            note=f"created as a standby for {first}",
        )


def rolling(r: Rollout, updates: list[Update]) -> None:
    touched: list[Update] = []
    try:
        for u in updates:
            touched.append(u)
            r.update_and_wait(u)
    except StepFailed as exc:
        r.roll_back(touched)
        exc.aftermath = "the machines updated so far got their previous config back"
        raise


def immediate(r: Rollout, updates: list[Update]) -> None:
    failures: list[StepFailed] = []
    updated: list[tuple[Update, str]] = []
    for u in updates:
        try:
            updated.append((u, r.update(u)))
        except StepFailed as exc:
            failures.append(exc)
    for u, version in updated:
        if not u.stays_stopped:
            try:
                r.ready(u.id, version, u.config, checks=False)
            except StepFailed as exc:
                failures.append(exc)
    if failures:
        first = failures[0]
        first.aftermath = f"{len(failures)} machine(s) failed; an immediate deploy is not undone"
        raise first


def canary(r: Rollout, updates: list[Update]) -> None:
    for u in _one_running_per_group(updates):
        config = copy.deepcopy(u.config)
        config["metadata"] = {**config.get("metadata", {}), "fly_canary": "true"}
        config["dns"] = {**(config.get("dns") or {}), "skip_registration": True}
        machine = r.create(u.group, config, u.region, note="created as a canary")
        mid = str(machine["id"])
        try:
            r.ready(mid, str(machine["version"]), config)
        except StepFailed as exc:
            exc.aftermath = "the canary was destroyed and no machine was changed"
            raise
        finally:
            r.destroy(mid)
    rolling(r, updates)


def bluegreen(r: Rollout, updates: list[Update]) -> None:
    tag = ids.ulid()
    greens: dict[str, JSONObject] = {}
    # Only machines the proxy routes to need keeping out of its rotation.
    routed = [u for u in updates if not u.stays_stopped and u.config.get("services")]
    try:
        # Standbys come after the machines they watch, so those have their greens.
        for u in updates:
            config = copy.deepcopy(u.config)
            config["metadata"] = {**config.get("metadata", {}), BLUEGREEN_TAG: tag}
            if u.is_standby:
                watched = [str(greens[b]["id"]) if b in greens else b for b in config["standbys"]]
                config = standby_config(config, watched)
            greens[u.id] = r.create(
                u.group,
                config,
                u.region,
                skip_launch=u.stays_stopped,
                cordoned=u in routed,
                note=f"created to replace {u.id}",
            )
        for u in updates:
            if not u.stays_stopped:
                green = greens[u.id]
                r.ready(str(green["id"]), str(green["version"]), u.config)
    except StepFailed as exc:
        for green in greens.values():
            r.destroy(str(green["id"]))
        exc.aftermath = "the new machines were destroyed; the old ones kept serving"
        raise
    for u in routed:
        r.cordon(str(greens[u.id]["id"]), cordoned=False)
    for u in updates:
        r.track(u.machine, u.group)
        if u in routed:
            r.cordon(u.id, cordoned=True)
        r.destroy(u.id, note=f"destroyed, replaced by {greens[u.id]['id']}")


Strategy = Callable[[Rollout, list[Update]], None]
ROLLOUTS: dict[str, Strategy] = {
    "rolling": rolling,
    "immediate": immediate,
    "canary": canary,
    "bluegreen": bluegreen,
}


def _one_running_per_group(updates: list[Update]) -> list[Update]:
    firsts: dict[str, Update] = {}
    for u in updates:
        if not u.stays_stopped and not u.is_standby:
            firsts.setdefault(u.group, u)
    return list(firsts.values())
