"""``roost logs``: an app's machine logs, followed live like ``fly logs``."""

from __future__ import annotations

import json

import click

from roost.cli.machines import APP_ENV_VARS
from roost.cli.session import Session


@click.command("logs")
@click.option("-a", "--app", "app_name", envvar=list(APP_ENV_VARS), metavar="APP", help="App name.")
@click.option("--machine", "machine_id", metavar="ID", help="Only this machine.")
@click.option("-r", "--region", help="Only machines in this region.")
@click.option("--no-tail", is_flag=True, help="Print what is there and exit; don't follow.")
@click.option(
    "-n", "--lines", type=click.IntRange(0, 10_000), default=100, show_default=True,
    help="How many past lines to start with.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def logs(
    session: Session,
    app_name: str | None,
    machine_id: str | None,
    region: str | None,
    no_tail: bool,
    lines: int,
    as_json: bool,
) -> None:
    """Show the logs of an app's machines, following them.

    Lines come from the machines' stdout and stderr, with platform events (start, exit
    codes, restarts, OOM kills) in between.
    """
    if not app_name:
        raise click.ClickException("no app given: pass -a/--app or set ROOST_APP")
    client = session.client()
    records = client.logs(
        app_name, machine=machine_id, region=region, follow=not no_tail, limit=lines
    )
    try:
        for record in records:
            click.echo(json.dumps(record) if as_json else format_record(record))
    except KeyboardInterrupt:
        pass


def format_record(record: dict[str, object]) -> str:
    """``2026-11-22T01:02:03.123Z app[id] region [stdout] message``, as fly logs prints."""
    return (
        f"{record['timestamp']} {record['app']}[{record['machine']}] {record['region']} "
        f"[{record['stream']}] {record['message']}"
    )
