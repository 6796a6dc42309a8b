"""``roost usage``: what machines cost, as running time by size, stopped time and storage."""

from __future__ import annotations

import time
from typing import Any

import click

from roost.cli.machines import APP_ENV_VARS
from roost.cli.output import print_json, table
from roost.cli.session import Session

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@click.command("usage")
@click.option("-a", "--app", "app_name", envvar=list(APP_ENV_VARS), metavar="APP", help="One app.")
@click.option("--since", help="Only from then: a span back from now (30m, 6h, 7d) or unix seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_obj
def usage(session: Session, app_name: str | None, since: str | None, as_json: bool) -> None:
    """Show what machines cost: running, stopped, stored.

    A stopped machine costs only its storage: compare the two to tune autostop.
    """
    report = session.client().usage(app_name, since=parse_since(since))
    if as_json:
        print_json(report)
        return
    rows = [
        [
            m["app"],
            m["machine"],
            _sizes(m["running_seconds"]),
            _seconds(m["stopped_seconds"]),
            _bytes(m["rootfs_bytes"] + m["volume_bytes"]),
        ]
        for m in report["machines"]
    ]
    totals = report["totals"]
    rows.append(
        [
            "TOTAL",
            "",
            _sizes(totals["running_seconds"]),
            _seconds(totals["stopped_seconds"]),
            _bytes(totals["rootfs_bytes"] + totals["volume_bytes"]),
        ]
    )
    click.echo(table(["APP", "MACHINE", "RUNNING", "STOPPED", "STORED"], rows))


def parse_since(value: str | None, now: float | None = None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    if text and text[-1] in UNITS and text[:-1].replace(".", "", 1).isdigit():
        return (now if now is not None else time.time()) - float(text[:-1]) * UNITS[text[-1]]
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use a span like 30m, 6h or 7d, or unix seconds", param_hint="--since"
        ) from None


def _sizes(running: dict[str, Any]) -> str:
    return ", ".join(f"{_seconds(s)} {size}" for size, s in sorted(running.items())) or "-"


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f}h"
    if value >= 60:
        return f"{value / 60:.1f}m"
    return f"{value:.0f}s"


def _bytes(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return f"{value} B"
