"""``roost scale``: how many machines an app runs (``count``), and how big (``vm``, ``memory``).

``count`` follows flyctl's rule (``count_machines.go``): the target is spread only over
the listed regions (by default the regions the app already runs in); new machines are
handed out round-robin over the regions in the given order starting with the first;
extras are removed round-robin starting with the second, stopped machines first.
Machines in other regions, and standbys, are left alone. Each create goes to exactly
its region — no fallback — and the operation is all or nothing: if a create fails, the
machines created so far are destroyed again. An app deployed with process groups is
scaled one group at a time (``--process-group``); new machines copy that group's config.

``vm`` and ``memory`` change the guest of every machine (of all groups, or one), as a
rolling update: one machine at a time, each started and healthy before the next, the
ones done so far rolled back if one fails. Stopped machines and standbys stay stopped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import click

from roost.appconfig.guest import SIZES, guest
from roost.cli.client import APIError, Client, JSONObject
from roost.cli.config import GuestFlags
from roost.cli.machines import Target, app_command
from roost.cli.output import confirm
from roost.cli.release import Update, group_of, is_active
from roost.cli.rollout import Pace, Rollout, StepFailed, rolling
from roost.cli.views import guest_label
from roost.cli.wait import DEFAULT_TIMEOUT

ACTIVE = ("started", "starting", "created", "stopped", "suspended", "stopping", "failed")


@dataclass
class Plan:
    add: dict[str, int] = field(default_factory=dict)
    remove: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove

    def lines(self) -> list[str]:
        out = [f"+{n} machine(s) in region {r}" for r, n in self.add.items()]
        out += [f"-{len(ids)} machine(s) in region {r}" for r, ids in self.remove.items()]
        return out


def process_group_option(fn: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "-g",
        "--process-group",
        metavar="GROUP",
        help="Only the machines of this process group (fly_process_group metadata).",
    )(fn)


def wait_timeout_option(fn: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--wait-timeout",
        type=click.IntRange(min=1),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="SECONDS",
        help="How long each machine may take to start and pass its checks.",
    )(fn)


@click.group("scale")
def scale() -> None:
    """Change how many machines an app runs, and their size."""


@scale.command("count")
@app_command
@click.argument("count", type=click.IntRange(min=0))
@click.option(
    "-r",
    "--region",
    "regions",
    metavar="REGION[,REGION...]",
    help="Regions to spread over, in order [default: the regions the app runs in].",
)
@click.option(
    "--max-per-region", type=click.IntRange(min=1), metavar="N", help="At most N per region."
)
@process_group_option
@click.option("-y", "--yes", is_flag=True, help="Do it without asking.")
def count(
    target: Target,
    count: int,
    regions: str | None,
    max_per_region: int | None,
    process_group: str | None,
    yes: bool,
) -> None:
    """Run COUNT machines of the app (or of one process group) over the listed regions."""
    machines = _group(
        target,
        [
            m
            for m in target.client.list_machines(target.app)
            if m.get("state") in ACTIVE and not (m.get("config") or {}).get("standbys")
        ],
        process_group,
    )
    listed = _regions(regions, machines)
    if max_per_region is not None and max_per_region * len(listed) < count:
        raise click.ClickException(
            "the number of regions by the maximum machines per region is fewer than the "
            f"expected total ({len(listed)} x {max_per_region} < {count})"
        )
    plan = plan_count(machines, listed, count, max_per_region)
    if plan.empty:
        click.echo(f"App {target.app} already runs {count} machine(s) over {', '.join(listed)}")
        return
    if process_group:
        click.echo(f"Process group {process_group!r}:")
    click.echo("\n".join(plan.lines()))
    if not confirm("Scale the app?", yes=yes, can_ask=target.can_ask):
        return
    if plan.add:
        if not machines:
            raise click.ClickException(
                f"app {target.app} has no machine to copy the config from; create one first "
                "(`roost machine run IMAGE -a APP`)"
            )
        _add(target.client, target.app, machines[0], plan.add)
    for ids in plan.remove.values():
        for machine_id in ids:
            target.client.destroy_machine(target.app, machine_id, force=True)
            click.echo(f"Destroyed machine {machine_id}")
    click.echo(f"App {target.app} runs {count} machine(s) over {', '.join(listed)}")


@scale.command("vm")
@app_command
@click.argument("size", metavar="SIZE")
@click.option(
    "--vm-memory", type=click.IntRange(min=1), metavar="MB", help="Memory instead of the size's."
)
@process_group_option
@wait_timeout_option
def vm(
    target: Target, size: str, vm_memory: int | None, process_group: str | None, wait_timeout: int
) -> None:
    """Give the machines a new SIZE (shared-cpu-2x, performance-1x, ...), one at a time."""
    if size not in SIZES:
        raise click.BadParameter(f"unknown size {size!r}; use one of {', '.join(SIZES)}")
    new = guest(size, memory_mb=vm_memory)
    _resize(target, lambda old: {**(old or {}), **new}, process_group, wait_timeout)


@scale.command("memory")
@app_command
@click.argument("memory_mb", metavar="MB", type=click.IntRange(min=1))
@process_group_option
@wait_timeout_option
def memory(target: Target, memory_mb: int, process_group: str | None, wait_timeout: int) -> None:
    """Give the machines MB of memory, keeping their CPUs, one at a time."""
    _resize(target, GuestFlags(memory_mb=memory_mb).apply, process_group, wait_timeout)


def _resize(
    target: Target,
    resized: Callable[[JSONObject | None], JSONObject],
    process_group: str | None,
    wait_timeout: int,
) -> None:
    machines = [
        m
        for m in target.client.list_machines(target.app)
        if is_active(m) and process_group in (None, group_of(m))
    ]
    if not machines:
        where = f" in process group {process_group!r}" if process_group else ""
        raise click.ClickException(f"app {target.app} has no machines{where} to resize")
    updates = []
    for m in machines:
        config = m.get("config") or {}
        new = resized(config.get("guest"))
        if new != config.get("guest"):
            updates.append(Update(m, {**config, "guest": new}))
            click.echo(
                f"Machine {m['id']}: {guest_label(config.get('guest'))} -> {guest_label(new)}"
            )
    if not updates:
        click.echo(f"The machines of app {target.app} already have that size")
        return
    rollout = Rollout(target.client, target.app, Pace(timeout=wait_timeout))
    try:
        rolling(rollout, updates)
    except StepFailed as exc:
        click.echo(f"\n{rollout.summary()}")
        raise click.ClickException(f"resizing failed: {exc}; {exc.aftermath}") from None
    click.echo(f"\n{rollout.summary()}")


def _group(target: Target, machines: list[JSONObject], group: str | None) -> list[JSONObject]:
    """The machines of ``group``; without one, the app must not have several groups."""
    groups = sorted({group_of(m) for m in machines})
    if group is None:
        if len(groups) > 1:
            named = ", ".join(g or "(none)" for g in groups)
            raise click.ClickException(
                f"app {target.app} has several process groups ({named}); "
                "pick one with --process-group"
            )
        return machines
    chosen = [m for m in machines if group_of(m) == group]
    if not chosen:
        have = f" (it has {', '.join(g for g in groups if g)})" if any(groups) else ""
        raise click.ClickException(
            f"app {target.app} has no machines in process group {group!r}{have}; "
            "deploy the group first (`roost deploy`)"
        )
    return chosen


def plan_count(
    machines: list[JSONObject], regions: list[str], count: int, max_per_region: int | None
) -> Plan:
    """What to add and remove, by flyctl's round-robin rule."""
    by_region = {r: [m for m in machines if m.get("region") == r] for r in regions}
    current = {r: len(ms) for r, ms in by_region.items()}
    delta = count - sum(current.values())
    plan = Plan()
    target = dict(current)
    i = 0
    while delta > 0:
        region = regions[i % len(regions)]
        if max_per_region is None or target[region] < max_per_region:
            target[region] += 1
            plan.add[region] = plan.add.get(region, 0) + 1
            delta -= 1
        i += 1
    i = 1
    while delta < 0:
        region = regions[i % len(regions)]
        if target[region] > 0:
            target[region] -= 1
            delta += 1
        i += 1
    for region in regions:
        extra = current[region] - target[region]
        if extra > 0:
            # Stopped machines go first: removing them interrupts nobody.
            ordered = sorted(by_region[region], key=lambda m: m.get("state") == "started")
            plan.remove[region] = [m["id"] for m in ordered[:extra]]
    return plan


def _regions(regions: str | None, machines: list[JSONObject]) -> list[str]:
    if regions:
        listed = [r.strip() for r in regions.split(",") if r.strip()]
    else:
        listed = list(dict.fromkeys(m["region"] for m in machines))
    if not listed:
        raise click.ClickException("the app has no machines yet: name regions with --region")
    return listed


def _add(client: Client, app: str, template: JSONObject, add: dict[str, int]) -> None:
    config = copy.deepcopy(template.get("config") or {})
    config.pop("standbys", None)
    created: list[str] = []
    try:
        for region, n in add.items():
            for _ in range(n):
                machine = client.create_machine(app, {"config": config, "region": region})
                created.append(machine["id"])
                click.echo(f"Created machine {machine['id']} in region {machine['region']}")
    except APIError:
        for machine_id in created:
            client.destroy_machine(app, machine_id, force=True)
        if created:
            click.echo(f"Destroyed the {len(created)} machine(s) created before the failure")
        raise
