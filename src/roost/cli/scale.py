"""``roost scale count``: set how many machines an app runs over a list of regions.

flyctl's rule (``count_machines.go``): the target is spread only over the listed
regions (by default the regions the app already runs in); new machines are handed out
round-robin over the regions in the given order starting with the first; extras are
removed round-robin starting with the second, stopped machines first. Machines in
other regions, and standbys, are left alone. Each create goes to exactly its region —
no fallback — and the operation is all or nothing: if a create fails, the machines
created so far are destroyed again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import click

from roost.cli.client import APIError, Client, JSONObject
from roost.cli.machines import Target, app_command
from roost.cli.output import confirm

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


@click.group("scale")
def scale() -> None:
    """Change how many machines an app runs."""


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
@click.option("-y", "--yes", is_flag=True, help="Do it without asking.")
def count(
    target: Target, count: int, regions: str | None, max_per_region: int | None, yes: bool
) -> None:
    """Run COUNT machines of the app over the listed regions."""
    machines = [
        m
        for m in target.client.list_machines(target.app)
        if m.get("state") in ACTIVE and not (m.get("config") or {}).get("standbys")
    ]
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
