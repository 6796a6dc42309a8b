"""The ``roost`` command: global options, subcommands, and error reporting.

Every failure ends as ``Error: <message>`` on stderr with exit status 1; API errors
carry the server's own message, which already says what to do next.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from roost import __version__
from roost.cli.client import ClientError
from roost.cli.session import DEFAULT_API_URL, Session

# name: (module, attribute, the line `roost --help` shows). Subcommands are imported
# only when used, so `roost --help` costs little more than importing click.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": (
        "roost.cli.fleet",
        "agent",
        "Run this host's agent in a fleet: its machines, and the endpoint to reach them.",
    ),
    "api": (
        "roost.cli.fleet",
        "api",
        "Run the API of a fleet, and stand for election as its controller.",
    ),
    "apps": ("roost.cli.apps", "apps", "Manage apps (named groups of machines)."),
    "console": ("roost.cli.console", "console", "Open a shell in a running machine."),
    "deploy": (
        "roost.cli.deploy",
        "deploy",
        "Roll a new release of the app out from its config file.",
    ),
    "drill": ("roost.cli.drill", "drill", "Rehearse failures: cut hosts off, measure, restore."),
    "hosts": ("roost.cli.hosts", "hosts", "Show and cordon the fleet's hosts."),
    "launch": (
        "roost.cli.deploy",
        "launch_app",
        "Create an app from its config file (or from flags) and deploy it.",
    ),
    "logs": ("roost.cli.logs", "logs", "Show the logs of an app's machines, following them."),
    "machine": ("roost.cli.machines", "machine", "Manage machines."),
    "proxy": ("roost.cli.proxy", "proxy", "Run the edge proxy on its own."),
    "status": (
        "roost.cli.status",
        "status",
        "Show the app's machines by process group, region and state, with their health.",
    ),
    "volumes": (
        "roost.cli.volumes",
        "volumes",
        "Manage volumes: persistent disks that machines mount.",
    ),
    "usage": ("roost.cli.usage", "usage", "Show what machines cost: running, stopped, stored."),
    "scale": ("roost.cli.scale", "scale", "Change how many machines an app runs, and their size."),
    "server": ("roost.cli.serve", "server", "Run the roost server (API, agent, proxy, registry)."),
}


class RoostGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, _, line) in sorted(COMMANDS.items())])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=RoostGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api-url",
    envvar="ROOST_API_URL",
    default=DEFAULT_API_URL,
    show_default=True,
    help="The roost API [env: ROOST_API_URL].",
)
@click.option(
    "--token",
    help="API token [default: $ROOST_API_TOKEN, $FLY_API_TOKEN, then DATA_DIR/admin-token].",
)
@click.option(
    "--data-dir",
    envvar="ROOST_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The server's data directory, for its admin token [env: ROOST_DATA_DIR].",
)
@click.version_option(__version__, prog_name="roost")
@click.pass_context
def cli(ctx: click.Context, api_url: str, token: str | None, data_dir: Path | None) -> None:
    """roost: self-hosted machines, driven like `fly machine`."""
    session = ctx.ensure_object(Session)
    session.api_url = api_url.rstrip("/")
    session.token = token
    session.data_dir = data_dir
    ctx.call_on_close(session.close)


def main() -> None:
    cli(prog_name="roost")
