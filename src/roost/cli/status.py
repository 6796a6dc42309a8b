"""``roost status``: an app and its machines, by process group, region and state.

Like ``fly status``: the version is the deploy's release (``v3``) where a deploy made
the machine, health is checks passing out of total, and standbys are marked ``†``.
"""

from __future__ import annotations

import click

from roost.cli.client import JSONObject
from roost.cli.machines import Target, app_command
from roost.cli.output import ago, fields, print_json, table
from roost.cli.release import group_of, standbys_of
from roost.cli.views import checks_summary, image_label

STANDBY_MARK = "†"


@click.command("status")
@app_command
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def status(target: Target, as_json: bool) -> None:
    """Show the app's machines by process group, region and state, with their health."""
    app = target.client.get_app(target.app)
    machines = sorted(target.client.list_machines(target.app), key=_order)
    if as_json:
        print_json({"app": app, "machines": machines})
        return
    click.echo("App")
    details = [
        ("Name", str(app.get("name", target.app))),
        ("Owner", str((app.get("organization") or {}).get("slug", ""))),
        ("Status", str(app.get("status", ""))),
    ]
    if release := _latest_release(machines):
        details.append(("Release", release))
    click.echo("\n".join(f"  {line}" for line in fields(details).splitlines()))
    if not machines:
        click.echo(f"\nNo machines yet; deploy with `roost deploy -a {target.app}`.")
        return
    rows = [
        (
            group_of(m) or "(none)",
            f"{m['id']} {STANDBY_MARK}" if standbys_of(m) else str(m["id"]),
            _version(m),
            str(m.get("region", "")),
            str(m.get("state", "")),
            checks_summary(m.get("checks")),
            image_label(m),
            ago(m.get("updated_at")),
        )
        for m in machines
    ]
    headers = ("PROCESS", "ID", "VERSION", "REGION", "STATE", "CHECKS", "IMAGE", "LAST UPDATED")
    click.echo(f"\nMachines\n{table(headers, rows)}")
    if any(standbys_of(m) for m in machines):
        click.echo(
            f"\n  {STANDBY_MARK} standby: stays stopped, and starts only if the host of the "
            "machine it watches fails"
        )


def _order(machine: JSONObject) -> tuple[str, str, bool, str, str]:
    return (
        group_of(machine),
        str(machine.get("region", "")),
        bool(standbys_of(machine)),
        str(machine.get("created_at", "")),
        str(machine["id"]),
    )


def _release(machine: JSONObject) -> str:
    return str(((machine.get("config") or {}).get("metadata") or {}).get("fly_release_version", ""))


def _version(machine: JSONObject) -> str:
    release = _release(machine)
    return f"v{release}" if release else str(machine.get("version", ""))


def _latest_release(machines: list[JSONObject]) -> str:
    releases = [int(r) for m in machines if (r := _release(m)).isdigit()]
    return f"v{max(releases)}" if releases else ""
