"""``roost launch`` and ``roost deploy``: an app's machines from its config file.

The config is ``roost.toml`` or ``fly.toml`` in the current directory (``-c`` names
another). ``launch`` writes a minimal ``roost.toml`` when there is none, creates the
app, and deploys it for the first time; ``deploy`` rolls a new release out over the
machines the app has, with the strategy of ``[deploy]`` or ``--strategy``.
"""

from __future__ import annotations

from pathlib import Path

import click

from roost.appconfig import (
    STRATEGIES,
    AppConfig,
    ConfigError,
    GroupError,
    find_config,
    group_configs,
    load_config,
    minimal_config,
    read_config,
)
from roost.cli.client import APIError, Client, JSONObject
from roost.cli.machines import APP_ENV_VARS
from roost.cli.output import confirm
from roost.cli.release import (
    Plan,
    PlanError,
    attach_volumes,
    group_of,
    plan_release,
)
from roost.cli.rollout import ROLLOUTS, Pace, Rollout, StepFailed, expects_checks, launch
from roost.cli.session import Session
from roost.cli.wait import DEFAULT_TIMEOUT

NEW_CONFIG = "roost.toml"


def config_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The config file [default: roost.toml, else fly.toml, in this directory].",
    )(fn)


def deploy_options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--wait-timeout",
        type=click.IntRange(min=1),
        metavar="SECONDS",
        help="How long each machine may take to start and pass its checks "
        f"[default: [deploy] wait_timeout, else {DEFAULT_TIMEOUT}].",
    )(fn)
    fn = click.option(
        "--ha/--no-ha",
        default=True,
        help="Launch new process groups with 2 machines (or 1 and a standby) [default: on].",
    )(fn)
    return click.option("--image", help="Deploy this image instead of [build] image.")(fn)


@click.command("launch")
@click.option("--name", help="App name [default: app in the config file].")
@click.option("-r", "--region", help="Primary region [default: primary_region in the config].")
@click.option("--org", "org_slug", default="personal", show_default=True, help="Org slug.")
@click.option("--no-deploy", is_flag=True, help="Create the app and config, deploy later.")
@click.option("-y", "--yes", is_flag=True, help="Do it without asking.")
@config_option
@deploy_options
@click.pass_obj
def launch_app(
    session: Session,
    name: str | None,
    region: str | None,
    org_slug: str,
    no_deploy: bool,
    yes: bool,
    config_path: Path | None,
    image: str | None,
    ha: bool,
    wait_timeout: int | None,
) -> None:
    """Create an app from its config file (or from flags) and deploy it.

    Without roost.toml or fly.toml, --name and --image (and --region) are written to a
    new roost.toml. The first deploy runs two machines for each process group with
    services, one and a stopped standby for each without, and one when it mounts a
    volume (the volume must exist: `roost volumes create`).
    """
    path = config_path or find_config(Path.cwd()) or Path(NEW_CONFIG)
    new_file = None
    if not path.exists():
        if not (name and image):
            raise click.ClickException(
                "no roost.toml or fly.toml here to launch from: pass --name and --image "
                f"to write {path}, or -c to point at a config file"
            )
        new_file = minimal_config(name, image, region)
    config = _read(path, new_file)
    if region:
        config = config.model_copy(update={"primary_region": region})
    app = name or config.app
    if not app:
        raise click.ClickException(f'{path} names no app: set app = "NAME" there or pass --name')
    click.echo(f"App {app} from {path}{' (new)' if new_file else ''}")
    if not confirm(f"Launch app {app}?", yes=yes, can_ask=session.can_ask()):
        click.echo("Not launched.", err=True)
        return
    if new_file is not None:
        path.write_text(new_file)
        click.echo(f"Wrote {path}")
    client = session.client()
    _ensure_app(client, app, org_slug)
    if no_deploy:
        click.echo(
            f"Deploy it with `roost deploy -a {app}{' -c ' + str(path) if config_path else ''}`"
        )
        return
    _deploy(client, app, config, image=image, strategy=None, ha=ha, wait_timeout=wait_timeout)


@click.command("deploy")
@click.option(
    "-a",
    "--app",
    "app_name",
    envvar=list(APP_ENV_VARS),
    metavar="APP",
    help="App name [default: app in the config file].",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    help="How machines are replaced [default: [deploy] strategy, else rolling].",
)
@config_option
@deploy_options
@click.pass_obj
def deploy(
    session: Session,
    app_name: str | None,
    strategy: str | None,
    config_path: Path | None,
    image: str | None,
    ha: bool,
    wait_timeout: int | None,
) -> None:
    """Roll a new release of the app out from its config file.

    Machines are updated in place, one at a time by default, each started and passing
    its checks before the next; on a failure the ones done so far get their previous
    config back. --strategy immediate, canary and bluegreen work as on Fly.
    """
    path = config_path or find_config(Path.cwd())
    if path is None:
        raise click.ClickException(
            "no roost.toml or fly.toml in this directory: pass -c PATH, "
            "or create the app and its config with `roost launch`"
        )
    config = _read(path)
    app = app_name or config.app
    if not app:
        raise click.ClickException(f'{path} names no app: set app = "NAME" there or pass -a')
    _deploy(session.client(), app, config, image, strategy, ha, wait_timeout)


def _deploy(
    client: Client,
    app: str,
    config: AppConfig,
    image: str | None,
    strategy: str | None,
    ha: bool,
    wait_timeout: int | None,
) -> None:
    image = image or config.build.image
    if not image:
        raise click.ClickException(
            "nothing to deploy: set [build] image in the config or pass --image "
            "(roost runs images; it does not build them)"
        )
    strategy = strategy or config.deploy.strategy
    try:
        groups = group_configs(config, image)
        plan = plan_release(groups, _machines(client, app), region=config.primary_region, ha=ha)
        if any(launch.config.get("mounts") for launch in plan.launches):
            plan = attach_volumes(plan, _volumes(client, app), app)
    except (GroupError, PlanError) as exc:
        raise click.ClickException(str(exc)) from None
    _check_strategy(plan, strategy)
    version = plan.release.version
    how = f", {strategy} strategy" if plan.updates else ""
    click.echo(f"Deploying release v{version} of app {app}: {image}{how}")
    for line in plan.lines():
        click.echo(f"  {line}")
    timeout = wait_timeout or config.deploy.wait_timeout or DEFAULT_TIMEOUT
    rollout = Rollout(client, app, Pace(timeout=timeout))
    try:
        for group in plan.launches:
            launch(rollout, group)
        if plan.updates:
            ROLLOUTS[strategy](rollout, plan.updates)
        for machine in plan.removals:
            rollout.track(machine, group_of(machine))
            rollout.destroy(str(machine["id"]), note="destroyed, its group is gone")
    except StepFailed as exc:
        click.echo(f"\n{rollout.summary()}")
        aftermath = f"; {exc.aftermath}" if exc.aftermath else ""
        raise click.ClickException(f"release v{version} failed: {exc}{aftermath}") from None
    click.echo(f"\n{rollout.summary()}")
    click.echo(f"Release v{version} of app {app} is deployed")


def _check_strategy(plan: Plan, strategy: str) -> None:
    """flyctl's limits: new machines cannot take over volumes, and bluegreen needs checks."""
    if not plan.updates:
        return
    if strategy in ("canary", "bluegreen"):
        mounted = sorted({u.group for u in plan.updates if u.config.get("mounts")})
        if mounted:
            raise click.ClickException(
                f"the {strategy} strategy creates new machines, which cannot take over the "
                f"volumes of process group(s) {', '.join(mounted)}; use --strategy rolling"
            )
    if strategy == "bluegreen" and not any(expects_checks(u.config) for u in plan.updates):
        raise click.ClickException(
            "the bluegreen strategy needs health checks to know the new machines are ready; "
            "add [[http_service.checks]] or [checks] to the config, or use --strategy rolling"
        )


def _read(path: Path, text: str | None = None) -> AppConfig:
    """The config in ``path``, or in ``text`` when that is about to be written there."""
    try:
        return read_config(text, str(path)) if text is not None else load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _ensure_app(client: Client, app: str, org_slug: str) -> None:
    try:
        client.get_app(app)
    except APIError as exc:
        if exc.status != 404:
            raise
        client.create_app(app, org_slug)
        click.echo(f"Created app {app}")
        return
    click.echo(f"App {app} exists already")


def _machines(client: Client, app: str) -> list[JSONObject]:
    try:
        return client.list_machines(app)
    except APIError as exc:
        if exc.status == 404 and exc.message == "app not found":
            raise APIError(
                404, f"app {app!r} not found; create it with `roost launch` or `roost apps create`"
            ) from None
        raise


def _volumes(client: Client, app: str) -> list[JSONObject]:
    try:
        return client.list_volumes(app)
    except APIError as exc:
        raise click.ClickException(
            f"the config mounts volumes, but the API did not list app {app}'s volumes "
            f"({exc.message}); volumes must exist before a deploy can attach them"
        ) from None
