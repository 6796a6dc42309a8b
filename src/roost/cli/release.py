"""What a deploy changes, decided before anything is touched.

Machines belong to a process group by their ``fly_process_group`` metadata, as flyctl
marks them. A group that has machines gets them updated in place to its new config;
a group with none is launched the way flyctl's first deploy does (two machines when it
has services, one plus a stopped standby when it has none, one when it mounts a
volume); machines of groups the config no longer has are removed. Machines without a
group (made by ``roost machine run``) are left alone.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from roost.appconfig import GroupConfig
from roost.cli.client import JSONObject
from roost.spec import ids

GONE_STATES = ("destroyed", "destroying")
RUNNING_STATES = ("started", "starting", "restarting", "replacing", "updating")
"""Machines in other states stay stopped through an update (``skip_launch``)."""
DEPLOY_METADATA = ("fly_release_id", "fly_release_version", "fly_canary")
"""flyctl's per-deploy marks: replaced, not carried over, by each deploy."""
BLUEGREEN_TAG = "fly_bluegreen_deployment_tag"
STANDBY_ENV = "FLY_STANDBY_FOR"
UNUSABLE_VOLUME_STATES = ("failed", "destroying", "destroyed")


class PlanError(Exception):
    """The deploy cannot be done as asked; the message says what to change."""


def group_of(machine: JSONObject) -> str:
    return str(((machine.get("config") or {}).get("metadata") or {}).get("fly_process_group", ""))


def standbys_of(machine: JSONObject) -> list[str]:
    return list((machine.get("config") or {}).get("standbys") or [])


def is_active(machine: JSONObject) -> bool:
    return machine.get("state") not in GONE_STATES


@dataclass(frozen=True)
class Release:
    id: str
    version: int

    @classmethod
    def after(cls, machines: list[JSONObject]) -> Release:
        """The release that follows the newest one the app's machines carry."""
        versions = [0]
        for m in machines:
            value = ((m.get("config") or {}).get("metadata") or {}).get("fly_release_version")
            if str(value).isdigit():
                versions.append(int(str(value)))
        return cls(ids.ulid(), max(versions) + 1)

    def metadata(self) -> dict[str, str]:
        return {"fly_release_id": self.id, "fly_release_version": str(self.version)}


@dataclass(frozen=True)
class Update:
    """One existing machine and the full config it is to run."""

    machine: JSONObject
    config: JSONObject

    @property
    def id(self) -> str:
        return str(self.machine["id"])

    @property
    def group(self) -> str:
        return group_of(self.machine)

    @property
    def region(self) -> str:
        return str(self.machine.get("region", ""))

    @property
    def version(self) -> str:
        return str(self.machine.get("version", ""))

    @property
    def old_config(self) -> JSONObject:
        return dict(self.machine.get("config") or {})

    @property
    def stays_stopped(self) -> bool:
        return self.machine.get("state") not in RUNNING_STATES

    @property
    def is_standby(self) -> bool:
        return bool(self.config.get("standbys"))


@dataclass(frozen=True)
class Launch:
    """A group with no machines yet, launched as flyctl's first deploy does."""

    group: str
    config: JSONObject
    count: int
    standby: bool
    region: str | None


@dataclass
class Plan:
    release: Release
    updates: list[Update] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    removals: list[JSONObject] = field(default_factory=list)
    detached: list[JSONObject] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for launch in self.launches:
            standby = " + 1 standby" if launch.standby else ""
            out.append(f"Process group {launch.group!r}: create {launch.count} machine(s){standby}")
        for group, count in Counter(u.group for u in self.updates).items():
            out.append(f"Process group {group!r}: update {count} machine(s)")
        for group, count in Counter(group_of(m) for m in self.removals).items():
            out.append(
                f"Process group {group!r}: destroy {count} machine(s) (no longer in the config)"
            )
        if self.detached:
            out.append(
                f"Leaving {len(self.detached)} machine(s) without a process group alone "
                "(not made by a deploy)"
            )
        return out


def plan_release(
    groups: list[GroupConfig],
    machines: list[JSONObject],
    *,
    region: str | None,
    ha: bool = True,
) -> Plan:
    active = [m for m in machines if is_active(m)]
    plan = Plan(Release.after(active))
    stamp = plan.release.metadata()
    by_group: dict[str, list[JSONObject]] = {}
    for m in sorted(active, key=lambda m: (m.get("region", ""), m.get("created_at", ""))):
        by_group.setdefault(group_of(m), []).append(m)
    plan.detached = by_group.pop("", [])
    for group in groups:
        config = copy.deepcopy(group.config)
        config["metadata"] = {**config["metadata"], **stamp}
        existing = by_group.pop(group.name, [])
        if existing:
            # Standbys last: they follow the machines they watch.
            existing.sort(key=lambda m: bool(standbys_of(m)))
            plan.updates += [Update(m, updated_config(m, config, group)) for m in existing]
        else:
            count, standby = launch_shape(group, ha=ha)
            plan.launches.append(Launch(group.name, config, count, standby, region))
    plan.removals = [m for ms in by_group.values() for m in ms]
    return plan


def launch_shape(group: GroupConfig, *, ha: bool) -> tuple[int, bool]:
    """(machines, whether a standby watches the first): flyctl's ``--ha`` rule."""
    if group.has_mounts or not ha:
        return 1, False  # a volume belongs to one machine
    if group.has_services:
        return 2, False
    return 1, True


def updated_config(machine: JSONObject, config: JSONObject, group: GroupConfig) -> JSONObject:
    """``config`` fitted to one existing machine: its own metadata, volume and standby role."""
    old = machine.get("config") or {}
    out = copy.deepcopy(config)
    kept = {
        k: v
        for k, v in (old.get("metadata") or {}).items()
        if k not in DEPLOY_METADATA and k != BLUEGREEN_TAG
    }
    out["metadata"] = {**kept, **out["metadata"]}
    # A group that gains services loses its standbys, as on Fly.
    if standbys_of(machine) and not group.has_services:
        out = standby_config(out, standbys_of(machine))
    if group.has_mounts:
        out["mounts"] = [_kept_volume(machine, out["mounts"][0], group.name)]
    return out


def standby_config(config: JSONObject, watched: list[str]) -> JSONObject:
    """``config`` for a stopped machine that starts if the host of ``watched`` fails."""
    out = copy.deepcopy(config)
    out["standbys"] = watched
    out["env"] = {**(out.get("env") or {}), STANDBY_ENV: ",".join(watched)}
    return out


def attach_volumes(plan: Plan, volumes: list[JSONObject], app: str) -> Plan:
    """Each launch that mounts a volume gets a free one of that name, and its region."""
    free = [
        v
        for v in volumes
        if not v.get("attached_machine_id") and v.get("state") not in UNUSABLE_VOLUME_STATES
    ]
    launches = []
    for launch in plan.launches:
        mounts = launch.config.get("mounts")
        if not mounts:
            launches.append(launch)
            continue
        name = mounts[0]["name"]
        volume = next(
            (v for v in free if v.get("name") == name and launch.region in (None, v.get("region"))),
            None,
        )
        if volume is None:
            where, flag = (f" in region {r}", f" -r {r}") if (r := launch.region) else ("", "")
            raise PlanError(
                f"process group {launch.group!r} mounts the volume {name!r}, but app {app} has "
                f"no unattached volume of that name{where}; create one first "
                f"(`roost volumes create {name}{flag} -a {app}`)"
            )
        free.remove(volume)
        config = copy.deepcopy(launch.config)
        config["mounts"] = [{**mounts[0], "volume": volume["id"]}]
        launches.append(
            Launch(launch.group, config, launch.count, launch.standby, str(volume["region"]))
        )
    plan.launches = launches
    return plan


def _kept_volume(machine: JSONObject, mount: dict[str, Any], group: str) -> dict[str, Any]:
    # A machine keeps the volume it has: the API cannot swap a mount by an update.
    current = (machine.get("config") or {}).get("mounts") or []
    if not current:
        raise PlanError(
            f"machine {machine['id']} of process group {group!r} has no volume, and an update "
            f"cannot add one; destroy it (`roost machine destroy {machine['id']} --force`) "
            "and deploy again to launch the group with its volume"
        )
    return {**mount, "volume": current[0]["volume"]}
