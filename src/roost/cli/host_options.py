"""Options of the commands that run a host (``roost server``, ``roost agent``)."""

from __future__ import annotations

import click

region_aliases = click.option(
    "--region-alias",
    "region_aliases",
    multiple=True,
    metavar="CODE",
    help="Another region name this host answers to, e.g. a Fly code (repeatable).",
)

cpus = click.option(
    "--cpus",
    type=click.IntRange(min=1),
    help=(
        "CPU slots to schedule: a shared vCPU takes one, a performance vCPU a whole "
        "core's worth [default: 8 per core]."
    ),
)
