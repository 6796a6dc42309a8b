"""``roost volumes``: an app's volumes and their snapshots, the way ``fly volumes`` does.

A volume lives on one host, in one region; a machine mounts it with
``config.mounts = [{"volume": ID, "path": "/data"}]`` and runs on that host. Snapshots
restore into new volumes anywhere (``create --snapshot-id``), and ``fork`` does both.
"""

from __future__ import annotations

import click

from roost.cli.client import JSONObject
from roost.cli.machines import Target, app_command
from roost.cli.output import ago, confirm, fields, print_json, table, timestamp


@click.group("volumes")
def volumes() -> None:
    """Manage volumes: persistent disks that machines mount."""


@volumes.command("create")
@click.argument("name")
@click.option("-r", "--region", help="Where it lives (default: the API's region).")
@click.option(
    "-s", "--size", "size_gb", type=click.IntRange(1, 500), metavar="GB",
    help="Size in GB [default: 3, or the snapshot's size].",
)  # fmt: skip
@click.option("--snapshot-id", metavar="ID", help="Restore this snapshot into it.")
@click.option(
    "--snapshot-retention", type=click.IntRange(1, 60), metavar="DAYS",
    help="Days its snapshots are kept [default: 5].",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@app_command
def create(
    target: Target,
    name: str,
    region: str | None,
    size_gb: int | None,
    snapshot_id: str | None,
    snapshot_retention: int | None,
    as_json: bool,
) -> None:
    """Create the volume NAME (empty, or restored from a snapshot)."""
    request: JSONObject = {"name": name}
    for key, value in (
        ("region", region),
        ("size_gb", size_gb),
        ("snapshot_id", snapshot_id),
        ("snapshot_retention", snapshot_retention),
    ):
        if value is not None:
            request[key] = value
    _created(target.client.create_volume(target.app, request), as_json)


@volumes.command("fork")
@click.argument("volume_id")
@click.option("-r", "--region", help="Where the fork lives (default: the volume's region).")
@click.option("--name", help="The fork's name (default: the volume's).")
@click.option("-s", "--size", "size_gb", type=click.IntRange(1, 500), metavar="GB")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@app_command
def fork(
    target: Target,
    volume_id: str,
    region: str | None,
    name: str | None,
    size_gb: int | None,
    as_json: bool,
) -> None:
    """Copy VOLUME_ID into a new volume, on another host if need be: a snapshot of it,
    restored."""
    source = target.client.get_volume(target.app, volume_id)
    request: JSONObject = {"name": name or source["name"], "source_volume_id": volume_id}
    if region:
        request["region"] = region
    if size_gb is not None:
        request["size_gb"] = size_gb
    _created(target.client.create_volume(target.app, request), as_json)


@volumes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@app_command
def list_volumes(target: Target, as_json: bool) -> None:
    """List the app's volumes."""
    found = target.client.list_volumes(target.app)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo(
            f"No volumes in app {target.app}; create one with `roost volumes create NAME`.",
            err=True,
        )
        return
    rows = [
        (
            v["id"],
            v["state"],
            v["name"],
            f"{v['size_gb']}GB",
            v["region"],
            v.get("zone") or "",
            v.get("attached_machine_id") or "",
            ago(v.get("created_at")),
        )
        for v in found
    ]
    headers = ("ID", "STATE", "NAME", "SIZE", "REGION", "ZONE", "ATTACHED VM", "CREATED")
    click.echo(table(headers, rows))


@volumes.command("show")
@click.argument("volume_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@app_command
def show(target: Target, volume_id: str, as_json: bool) -> None:
    """Show one volume."""
    volume = target.client.get_volume(target.app, volume_id)
    if as_json:
        print_json(volume)
        return
    click.echo(_details(volume))


@volumes.command("update")
@click.argument("volume_id")
@click.option(
    "--snapshot-retention", type=click.IntRange(1, 60), required=True, metavar="DAYS",
    help="Days its snapshots are kept.",
)  # fmt: skip
@app_command
def update(target: Target, volume_id: str, snapshot_retention: int) -> None:
    """Change how long VOLUME_ID's snapshots are kept."""
    request = {"snapshot_retention": snapshot_retention}
    volume = target.client.update_volume(target.app, volume_id, request)
    click.echo(_details(volume))


@volumes.command("extend")
@click.argument("volume_id")
@click.option(
    "-s", "--size", "size_gb", type=click.IntRange(1, 500), required=True, metavar="GB",
    help="The new size in GB (volumes only grow).",
)  # fmt: skip
@app_command
def extend(target: Target, volume_id: str, size_gb: int) -> None:
    """Grow VOLUME_ID to a new size."""
    answer = target.client.extend_volume(target.app, volume_id, size_gb)
    volume = answer["volume"]
    click.echo(f"Volume {volume['id']} is being extended to {volume['size_gb']}GB")
    if answer.get("needs_restart"):
        machine = volume.get("attached_machine_id")
        click.echo(
            f"Its filesystem grows when machine {machine} next starts: restart it with "
            f"`roost machine restart {machine} -a {target.app}`"
        )


@volumes.command("destroy")
@click.argument("volume_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@app_command
def destroy(target: Target, volume_id: str, yes: bool) -> None:
    """Destroy VOLUME_ID and its data (its snapshots are kept for their retention)."""
    question = f"Destroy volume {volume_id} and all its data? This cannot be undone."
    if not confirm(question, yes=yes, can_ask=target.can_ask):
        raise click.Abort()
    volume = target.client.destroy_volume(target.app, volume_id)
    click.echo(f"Destroyed volume {volume['id']} ({volume['name']})")


@volumes.group("snapshots")
def snapshots() -> None:
    """List and take snapshots of volumes."""


@snapshots.command("list")
@click.argument("volume_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@app_command
def list_snapshots(target: Target, volume_id: str, as_json: bool) -> None:
    """List VOLUME_ID's snapshots, oldest first."""
    found = target.client.list_snapshots(target.app, volume_id)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo(f"No snapshots of volume {volume_id} yet.", err=True)
        return
    rows = [
        (s["id"], s["status"], _bytes(s["size"]), ago(s["created_at"]), f"{s['retention_days']}d")
        for s in found
    ]
    click.echo(table(("ID", "STATUS", "SIZE", "CREATED AT", "RETENTION"), rows))


@snapshots.command("create")
@click.argument("volume_id")
@app_command
def create_snapshot(target: Target, volume_id: str) -> None:
    """Take a snapshot of VOLUME_ID now."""
    snapshot = target.client.create_snapshot(target.app, volume_id)
    which = f" {snapshot['id']}" if snapshot else ""
    click.echo(
        f"Scheduled snapshot{which} of volume {volume_id}; "
        f"`roost volumes snapshots list {volume_id} -a {target.app}` shows when it is taken"
    )


def _created(volume: JSONObject, as_json: bool) -> None:
    if as_json:
        print_json(volume)
        return
    click.echo(_details(volume))


def _details(volume: JSONObject) -> str:
    pairs = [
        ("ID", volume["id"]),
        ("Name", volume["name"]),
        ("State", volume["state"] + (f" ({volume['error']})" if volume.get("error") else "")),
        ("Region", volume["region"]),
        ("Zone", volume.get("zone") or ""),
        ("Size", f"{volume['size_gb']}GB"),
        ("Attached VM", volume.get("attached_machine_id") or "-"),
        ("Snapshot retention", f"{volume.get('snapshot_retention', '')} days"),
        ("Created at", timestamp(volume.get("created_at"))),
    ]
    if volume.get("bytes_total"):
        pairs.append(("Used", f"{_bytes(volume['bytes_used'])} of {_bytes(volume['bytes_total'])}"))
    return fields(pairs)


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
