"""``roost hosts``: the fleet's hosts — which are up, where, how full."""

from __future__ import annotations

import click

from roost.cli.client import JSONObject
from roost.cli.output import fields, print_json, table
from roost.cli.session import Session


@click.group("hosts")
def hosts() -> None:
    """Show and cordon the fleet's hosts."""


@hosts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_obj
def list_hosts(session: Session, as_json: bool) -> None:
    """List hosts: region, state, capacity in use, machines."""
    found = session.client().list_hosts()
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("No hosts have registered: start `roost agent` (or `roost server`).")
        return
    rows = [
        (
            h["id"],
            h["region"],
            _state(h),
            f"{h['allocated']['cpus']}/{h['capacity']['cpus']}",
            f"{h['allocated']['memory_mb']}/{h['capacity']['memory_mb']} MB",
            str(len(h["machines"])),
            str(h["epoch"]),
            h["proxy"] or "-",
        )
        for h in found
    ]
    click.echo(
        table(("ID", "REGION", "STATE", "CPUS", "MEMORY", "MACHINES", "EPOCH", "PROXY"), rows)
    )


@hosts.command("show")
@click.argument("host_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_obj
def show(session: Session, host_id: str, as_json: bool) -> None:
    """Show one host and the machines on it."""
    host = session.client().get_host(host_id)
    if as_json:
        print_json(host)
        return
    click.echo(
        fields(
            [
                ("Host", host["id"]),
                ("Region", host["region"]),
                ("State", _state(host)),
                ("Epoch", str(host["epoch"])),
                ("Agent", host["address"] or "(in the server's process)"),
                ("Proxy", host["proxy"] or "-"),
                ("Registered", host["registered_at"]),
                ("Lost", host["lost_at"] or "-"),
                ("Machines", ", ".join(m["id"] for m in host["machines"]) or "-"),
            ]
        )
    )


@hosts.command("cordon")
@click.argument("host_id")
@click.pass_obj
def cordon(session: Session, host_id: str) -> None:
    """Place no new machines on HOST_ID (its machines keep running)."""
    session.client().host_action(host_id, "cordon")
    click.echo(f"Host {host_id} is cordoned: new machines go elsewhere")


@hosts.command("uncordon")
@click.argument("host_id")
@click.pass_obj
def uncordon(session: Session, host_id: str) -> None:
    """Let HOST_ID take new machines again."""
    session.client().host_action(host_id, "uncordon")
    click.echo(f"Host {host_id} takes new machines again")


def _state(host: JSONObject) -> str:
    return f"{host['state']}{' (cordoned)' if host['cordoned'] else ''}"
