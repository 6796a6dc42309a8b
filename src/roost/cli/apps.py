"""``roost apps``: create, list and destroy apps."""

from __future__ import annotations

import click

from roost.cli.client import APIError
from roost.cli.output import confirm, print_json, table
from roost.cli.session import Session


@click.group()
def apps() -> None:
    """Manage apps (named groups of machines)."""


@apps.command("create")
@click.argument("name")
@click.option("--org", "org_slug", default="personal", show_default=True, help="Org slug.")
@click.pass_obj
def create(session: Session, name: str, org_slug: str) -> None:
    """Create the app NAME."""
    session.client().create_app(name, org_slug)
    click.echo(f"New app created: {name}")


@apps.command("list")
@click.option("--org", "org_slug", help="Only apps of this org.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_obj
def list_apps(session: Session, org_slug: str | None, as_json: bool) -> None:
    """List apps."""
    body = session.client().list_apps(org_slug)
    if as_json:
        print_json(body)
        return
    found = sorted(body.get("apps") or [], key=lambda a: a.get("name", ""))
    if not found:
        click.echo("No apps yet; create one with `roost apps create NAME`.", err=True)
        return
    rows = [
        (
            a.get("name", ""),
            (a.get("organization") or {}).get("slug", ""),
            a.get("status", ""),
            str(a.get("machine_count", "")),
        )
        for a in found
    ]
    click.echo(table(("NAME", "ORG", "STATUS", "MACHINES"), rows))


@apps.command("destroy")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also destroy running machines.")
@click.pass_obj
def destroy(session: Session, name: str, yes: bool, force: bool) -> None:
    """Destroy the app NAME and its machines."""
    question = f"Destroy app {name!r} and all its machines? This cannot be undone."
    if not confirm(question, yes=yes, can_ask=session.can_ask()):
        click.echo("Not destroyed.", err=True)
        return
    try:
        session.client().delete_app(name, force=force)
    except APIError as exc:
        if exc.status == 412 and not force:
            raise APIError(exc.status, f"{exc.message} (--force does that)") from None
        raise
    click.echo(f"Destroyed app {name}")
