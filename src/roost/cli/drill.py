"""``roost drill``: rehearse losing a host or a region, under load, and measure it."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import click

from roost.cli.machines import APP_ENV_VARS
from roost.cli.session import Session, resolve_token


def drill_options(fn: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "-a",
            "--app",
            "app_name",
            envvar=list(APP_ENV_VARS),
            required=True,
            metavar="APP",
            help="The app to send drill traffic to [default: $ROOST_APP, then $FLY_APP].",
        ),
        click.option(
            "--url",
            default="http://127.0.0.1:8080",
            show_default=True,
            help="A proxy to send the drill traffic through (one not on the drilled hosts).",
        ),
        click.option(
            "--domain",
            default="localhost",
            show_default=True,
            help="The proxy's domain: traffic goes to APP.DOMAIN.",
        ),
        click.option(
            "--hold",
            type=click.FloatRange(min=1),
            default=20.0,
            show_default=True,
            metavar="SECONDS",
            help="How long the hosts stay cut off.",
        ),
        click.option(
            "--rps",
            type=click.FloatRange(min=0),
            default=50.0,
            show_default=True,
            help="Drill traffic, requests per second (0: none).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group("drill")
def drill() -> None:
    """Rehearse failures: cut hosts off, measure, restore."""


@drill.command("host-down")
@click.argument("host_id")
@drill_options
@click.pass_obj
def host_down(session: Session, host_id: str, **options: Any) -> None:
    """Cut HOST_ID off from the fleet under load, then restore it.

    Its machines keep running (as behind a partition) while the fleet declares the host
    lost, routes around it and starts the standbys of its machines.
    """
    _run(session, "host-down", lambda d: d.hosts_given([host_id]), **options)


@drill.command("region-down")
@click.argument("region")
@drill_options
@click.pass_obj
def region_down(session: Session, region: str, **options: Any) -> None:
    """Cut every host of REGION off from the fleet under load, then restore them."""
    _run(session, "region-down", lambda d: d.hosts_in_region(region), **options)


def _run(
    session: Session,
    kind: str,
    hosts_of: Callable[[Any], Any],
    *,
    app_name: str,
    url: str,
    domain: str,
    hold: float,
    rps: float,
    as_json: bool,
) -> None:
    from roost.drill.drill import Drill, DrillError
    from roost.drill.load import LoadGenerator

    token = resolve_token(session.token, session.data_dir, os.environ)

    async def main() -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=session.api_url, headers=headers, timeout=30, trust_env=False
        ) as api:
            load = LoadGenerator(url, f"{app_name}.{domain}", rps) if rps else None
            drill = Drill(api, app_name, load=load)
            hosts = await hosts_of(drill)
            if not as_json:
                click.echo(f"Cutting off {', '.join(hosts)} for {hold:g}s...")
            return await drill.run(kind, hosts, hold)

    try:
        report = asyncio.run(main())
    except DrillError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.wire(), indent=2))
    else:
        click.echo("\n".join(report.lines()))
    if report.ran_twice:
        raise click.ClickException(f"machines ran twice: {', '.join(report.ran_twice)}")
