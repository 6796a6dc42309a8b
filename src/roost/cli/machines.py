"""``roost machine``: run, inspect and drive machines, the way ``fly machine`` does.

Mutations (start, stop, restart, update, destroy) hold the machine's lease around
the call, as flyctl does, so they never interleave with another client's changes.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from roost.cli.client import APIError, Client, JSONObject, held_lease
from roost.cli.config import (
    PORT_SYNTAX,
    RESTART_POLICIES,
    GuestFlags,
    PortSpec,
    RunFlags,
    command_option,
    kv_option,
    pinned_image,
    port_option,
    run_config,
    service_settings,
    updated_config,
    volume_option,
)
from roost.cli.output import ago, config_diff, confirm, fields, print_json, table, warn_ignored
from roost.cli.session import Session
from roost.cli.views import (
    checks_summary,
    command_label,
    events_table,
    guest_label,
    image_label,
    restart_label,
    when,
)
from roost.cli.wait import (
    DEFAULT_TIMEOUT,
    STOPPED_STATES,
    Progress,
    latest_event_id,
    wait_for_restart,
    wait_for_state,
)

APP_ENV_VARS = ("ROOST_APP", "FLY_APP")
SHELL_IMAGE = "127.0.0.1:5000/roost/busybox:latest"
"""``run --shell``'s image: flyctl's is ubuntu; this one is in the server's own registry."""
SHELL_KEEPALIVE = ["/bin/sleep", "inf"]
# A new machine either comes up, or runs its command to the end before we look.
LAUNCH_STATES = ("started", "stopped", "failed", "destroyed")
EVENTS_SHOWN = 10


@dataclass(frozen=True)
class Target:
    """The app a machine command works on, and how to reach the API."""

    client: Client
    app: str
    can_ask: bool


def app_command(fn: Callable[..., None]) -> Callable[..., None]:
    """Adds ``-a/--app`` and calls ``fn(target, **options)``."""

    @click.option(
        "-a",
        "--app",
        "app_name",
        envvar=list(APP_ENV_VARS),
        metavar="APP",
        help="App name (default: $ROOST_APP, then $FLY_APP).",
    )
    @click.pass_obj
    @functools.wraps(fn)
    def wrapper(session: Session, app_name: str | None, **options: Any) -> None:
        if not app_name:
            raise click.ClickException("no app given: pass -a/--app or set ROOST_APP")
        try:
            fn(Target(session.client(), app_name, session.can_ask()), **options)
        except APIError as exc:
            if exc.status == 404 and exc.message == "app not found":
                hint = f"create it with `roost apps create {app_name}`"
                raise APIError(404, f"app {app_name!r} not found; {hint}") from None
            raise

    return wrapper


def wait_option(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option(
        "--wait-timeout",
        type=click.IntRange(min=1),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for the machine.",
    )(fn)
    return click.option("--detach", is_flag=True, help="Do not wait for the machine.")(fn)


def guest_options(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option("--vm-cpu-kind", type=click.Choice(["shared", "performance"]))(fn)
    fn = click.option("--vm-cpus", type=click.IntRange(min=1), metavar="N", help="CPUs.")(fn)
    return click.option(
        "--vm-memory", type=click.IntRange(min=1), metavar="MB", help="Memory in MB."
    )(fn)


@click.group("machine")
def machine() -> None:
    """Manage machines."""


# -- run, clone ---------------------------------------------------------------------------


@machine.command("run")
@app_command
@click.argument("image", required=False)
@click.argument("command", nargs=-1)
@click.option(
    "--shell",
    is_flag=True,
    help=f"Open a shell in the new machine and destroy it when the shell exits "
    f"[default IMAGE: {SHELL_IMAGE}].",
)
@click.option("-n", "--name", help="Machine name (generated if omitted).")
@click.option("-r", "--region", help="Region to place the machine in.")
@guest_options
@click.option("-e", "--env", multiple=True, callback=kv_option, metavar="K=V", help="Env var.")
@click.option(
    "-p",
    "--port",
    multiple=True,
    callback=port_option,
    metavar=PORT_SYNTAX,
    help="Expose a port; a bare PORT is an HTTP service on that port.",
)
@click.option(
    "--restart",
    type=click.Choice(RESTART_POLICIES),
    help="Restart policy [default: always; no with --rm].",
)
@click.option("--rm", is_flag=True, help="Destroy the machine when its process exits.")
@click.option(
    "-v",
    "--volume",
    "volumes",
    multiple=True,
    callback=volume_option,
    metavar="VOL:/PATH",
    help="Mount a volume (its id) at PATH; the machine runs on the volume's host.",
)
@click.option("--entrypoint", callback=command_option, help="Replace the image's ENTRYPOINT.")
@click.option("-m", "--metadata", multiple=True, callback=kv_option, metavar="K=V")
@click.option("--skip-start", is_flag=True, help="Create the machine without starting it.")
@click.option(
    "--autostop",
    type=click.Choice(["off", "stop", "suspend"]),
    help="Let the proxy stop (or suspend) the machine when traffic does not need it.",
)
@click.option(
    "--autostart/--no-autostart",
    default=None,
    help="Let the proxy start the machine when traffic needs it [default: on].",
)
@click.option(
    "--min-machines-running",
    type=click.IntRange(min=0),
    help="Machines autostop leaves running in the primary region.",
)
@click.option("--soft-limit", type=click.IntRange(min=1), help="Concurrency soft limit.")
@click.option("--hard-limit", type=click.IntRange(min=1), help="Concurrency hard limit.")
@click.option(
    "--concurrency-type",
    type=click.Choice(["connections", "requests"]),
    help="What the limits count [default: connections].",
)
@wait_option
def run(
    target: Target,
    image: str | None,
    command: tuple[str, ...],
    shell: bool,
    name: str | None,
    region: str | None,
    vm_memory: int | None,
    vm_cpus: int | None,
    vm_cpu_kind: str | None,
    env: dict[str, str],
    port: list[PortSpec],
    restart: str | None,
    rm: bool,
    volumes: list[dict[str, str]],
    entrypoint: list[str],
    metadata: dict[str, str],
    skip_start: bool,
    autostop: str | None,
    autostart: bool | None,
    min_machines_running: int | None,
    soft_limit: int | None,
    hard_limit: int | None,
    concurrency_type: str | None,
    detach: bool,
    wait_timeout: int,
) -> None:
    """Create a machine running IMAGE (with COMMAND, given after --) and wait for it."""
    if shell:
        if skip_start or detach:
            raise click.UsageError("--shell needs the machine started: drop --skip-start/--detach")
        image = image or SHELL_IMAGE
    elif not image:
        raise click.UsageError("Missing argument 'IMAGE'.")
    settings = service_settings(
        autostop, autostart, min_machines_running, soft_limit, hard_limit, concurrency_type
    )
    if settings and not port:
        raise click.UsageError("service settings like --autostop need a --port")
    flags = RunFlags(
        image=image,
        cmd=command,
        entrypoint=entrypoint,
        env=env,
        metadata=metadata,
        ports=port,
        guest=GuestFlags(vm_memory, vm_cpus, vm_cpu_kind),
        restart=restart,
        auto_destroy=rm or shell,
        service=settings,
        mounts=volumes,
    )
    config = run_config(flags)
    if shell and not command:
        # Something to keep the machine up while the shell is open; flyctl's choice.
        config["init"]["exec"] = SHELL_KEEPALIVE
    request: JSONObject = {"config": config}
    if name:
        request["name"] = name
    if region:
        request["region"] = region
    if skip_start:
        request["skip_launch"] = True
    created = target.client.create_machine(target.app, request)
    click.echo(
        f"Machine {created['id']} ({created.get('name', '')}) created in app {target.app}, "
        f"region {created.get('region', '')}"
    )
    warn_ignored(created)
    if skip_start:
        click.echo(f"Start it with `roost machine start {created['id']} -a {target.app}`")
        return
    if shell:
        _shell(target, created, wait_timeout)
    elif not detach:
        _await_launch(target, created, wait_timeout)


def _shell(target: Target, created: JSONObject, timeout: int) -> None:
    """A shell in the new machine on this terminal; the machine goes when the shell does."""
    from roost.cli.console import open_console  # console imports this module

    machine_id = created["id"]
    try:
        _await_launch(target, created, timeout)
        session = click.get_current_context().ensure_object(Session)
        exit_code = open_console(session, target.app, machine_id)
    finally:
        try:
            with held_lease(target.client, target.app, machine_id) as nonce:
                target.client.destroy_machine(target.app, machine_id, force=True, nonce=nonce)
            click.echo(f"Machine {machine_id} destroyed", err=True)
        except APIError as exc:
            # auto_destroy may have been quicker: a machine that failed is gone already.
            if exc.status != 404:
                raise
    raise SystemExit(exit_code)


@machine.command("clone")
@app_command
@click.argument("machine_id")
@click.option(
    "-r", "--region", help="Region of the clone, or regions to try in order [default: source's]."
)
@click.option("-n", "--name", help="Name of the clone (generated if omitted).")
@click.option(
    "--standby-for",
    metavar="ID[,ID]",
    help="Make the clone a stopped standby that starts if these machines' host fails "
    "('source' means MACHINE_ID).",
)
@click.option("--image", help="Run another image than the source (e.g. a recovery one).")
@wait_option
def clone(
    target: Target,
    machine_id: str,
    region: str | None,
    name: str | None,
    standby_for: str | None,
    image: str | None,
    detach: bool,
    wait_timeout: int,
) -> None:
    """Create a copy of MACHINE_ID running exactly the same image."""
    source = target.client.get_machine(target.app, machine_id)
    config = copy.deepcopy(source.get("config") or {})
    config["image"] = image or pinned_image(source)
    config.pop("standbys", None)
    (config.get("env") or {}).pop("FLY_STANDBY_FOR", None)
    request: JSONObject = {"config": config, "region": region or source.get("region")}
    watched = _standby_targets(standby_for, machine_id)
    if watched:
        config["standbys"] = watched
        config["env"] = {**(config.get("env") or {}), "FLY_STANDBY_FOR": ",".join(watched)}
        request["skip_launch"] = True
    if name:
        request["name"] = name
    created = target.client.create_machine(target.app, request)
    click.echo(
        f"Machine {machine_id} cloned into {created['id']} ({created.get('name', '')}), "
        f"region {created.get('region', '')}"
    )
    warn_ignored(created)
    if watched:
        click.echo(
            f"Machine {created['id']} is a standby for {', '.join(watched)}: it stays "
            "stopped and starts if their host fails"
        )
    elif not detach:
        _await_launch(target, created, wait_timeout)


def _standby_targets(standby_for: str | None, source: str) -> list[str]:
    if not standby_for:
        return []
    ids = [source if part.strip() == "source" else part.strip() for part in standby_for.split(",")]
    return [i for i in ids if i]


def _await_launch(target: Target, created: JSONObject, timeout: int) -> None:
    machine_id = created["id"]
    state = wait_for_state(
        target.client,
        target.app,
        machine_id,
        states=LAUNCH_STATES,
        version=created.get("version"),
        timeout=timeout,
        progress=Progress(f"Waiting for machine {machine_id} to start..."),
    )
    _report_start(target, machine_id, state, created.get("private_ip"))


def _report_start(target: Target, machine_id: str, state: str, private_ip: str | None) -> None:
    if state == "started":
        click.echo(f"Machine {machine_id} is started")
        if private_ip:
            click.echo(f"  private IP: {private_ip}")
        return
    status = f"`roost machine status {machine_id} -a {target.app}`"
    if state == "failed":
        reason = _failure(target, machine_id)
        raise click.ClickException(
            f"machine {machine_id} failed to start{': ' + reason if reason else ''}; see {status}"
        )
    click.echo(f"Machine {machine_id} is {state}: its process has already exited; see {status}")


def _failure(target: Target, machine_id: str) -> str:
    for event in target.client.list_events(target.app, machine_id, limit=EVENTS_SHOWN):
        if event.get("status") == "failed":
            return str(event.get("message", ""))
    return ""


# -- lifecycle --------------------------------------------------------------------------


@machine.command("start")
@app_command
@click.argument("machine_ids", nargs=-1, required=True, metavar="ID...")
@wait_option
def start(target: Target, machine_ids: tuple[str, ...], detach: bool, wait_timeout: int) -> None:
    """Start stopped machines."""
    for machine_id in machine_ids:
        with held_lease(target.client, target.app, machine_id) as nonce:
            result = target.client.start_machine(target.app, machine_id, nonce=nonce)
        if detach:
            click.echo(f"Machine {machine_id} is starting")
            continue
        # A machine that was failed before is still failed until the agent acts.
        failed_before = result.get("previous_state") == "failed"
        state = wait_for_state(
            target.client,
            target.app,
            machine_id,
            states=("started",) if failed_before else ("started", "failed"),
            timeout=wait_timeout,
            progress=Progress(f"Waiting for machine {machine_id} to start..."),
        )
        _report_start(target, machine_id, state, None)


@machine.command("stop")
@app_command
@click.argument("machine_ids", nargs=-1, required=True, metavar="ID...")
@click.option("-s", "--signal", help="Signal to stop with [default: the machine's stop_config].")
@click.option("--timeout", help="Time to wait before SIGKILL, like 10s.")
@wait_option
def stop(
    target: Target,
    machine_ids: tuple[str, ...],
    signal: str | None,
    timeout: str | None,
    detach: bool,
    wait_timeout: int,
) -> None:
    """Stop running machines."""
    for machine_id in machine_ids:
        with held_lease(target.client, target.app, machine_id) as nonce:
            target.client.stop_machine(
                target.app, machine_id, signal=signal, timeout=timeout, nonce=nonce
            )
        if detach:
            click.echo(f"Machine {machine_id} is stopping")
            continue
        state = wait_for_state(
            target.client,
            target.app,
            machine_id,
            states=STOPPED_STATES,
            timeout=wait_timeout,
            progress=Progress(f"Waiting for machine {machine_id} to stop..."),
        )
        click.echo(f"Machine {machine_id} is {state}")


@machine.command("restart")
@app_command
@click.argument("machine_ids", nargs=-1, required=True, metavar="ID...")
@click.option("-s", "--signal", help="Signal to stop with [default: the machine's stop_config].")
@click.option("--timeout", help="Time to wait before SIGKILL, like 10s.")
@wait_option
def restart(
    target: Target,
    machine_ids: tuple[str, ...],
    signal: str | None,
    timeout: str | None,
    detach: bool,
    wait_timeout: int,
) -> None:
    """Restart running machines (stop, then start)."""
    for machine_id in machine_ids:
        before = "" if detach else latest_event_id(target.client, target.app, machine_id)
        with held_lease(target.client, target.app, machine_id) as nonce:
            target.client.restart_machine(
                target.app, machine_id, signal=signal, timeout=timeout, nonce=nonce
            )
        if detach:
            click.echo(f"Machine {machine_id} is restarting")
            continue
        state = wait_for_restart(
            target.client,
            target.app,
            machine_id,
            after_event=before,
            timeout=wait_timeout,
            progress=Progress(f"Waiting for machine {machine_id} to restart..."),
        )
        _report_start(target, machine_id, state, None)


@machine.command("destroy")
@app_command
@click.argument("machine_ids", nargs=-1, required=True, metavar="ID...")
@click.option("-f", "--force", is_flag=True, help="Kill running machines.")
def destroy(target: Target, machine_ids: tuple[str, ...], force: bool) -> None:
    """Destroy machines (running ones need --force)."""
    for machine_id in machine_ids:
        with held_lease(target.client, target.app, machine_id) as nonce:
            try:
                target.client.destroy_machine(target.app, machine_id, force=force, nonce=nonce)
            except APIError as exc:
                if exc.status == 412 and not force:
                    raise APIError(exc.status, f"{exc.message} (--force does that)") from None
                raise
        click.echo(f"Machine {machine_id} destroyed")


@machine.command("update")
@app_command
@click.argument("machine_id")
@click.argument("command", nargs=-1)
@click.option("--image", help="New image.")
@guest_options
@click.option("-e", "--env", multiple=True, callback=kv_option, metavar="K=V", help="Set env var.")
@click.option("-y", "--yes", is_flag=True, help="Apply without asking.")
@wait_option
def update(
    target: Target,
    machine_id: str,
    command: tuple[str, ...],
    image: str | None,
    vm_memory: int | None,
    vm_cpus: int | None,
    vm_cpu_kind: str | None,
    env: dict[str, str],
    yes: bool,
    detach: bool,
    wait_timeout: int,
) -> None:
    """Change MACHINE_ID's config (COMMAND, after --, replaces its cmd); it reboots."""
    current = target.client.get_machine(target.app, machine_id)
    old = current.get("config") or {}
    new = updated_config(
        old, image=image, guest=GuestFlags(vm_memory, vm_cpus, vm_cpu_kind), env=env, cmd=command
    )
    diff = config_diff(old, new)
    if not diff:
        click.echo("No config changes found", err=True)
        return
    click.echo(
        f"Configuration changes to be applied to machine {machine_id} ({current.get('name', '')}):"
    )
    for line in diff:
        click.echo(f"  {line}")
    if not confirm("Apply changes?", yes=yes, can_ask=target.can_ask):
        click.echo("Not updated.", err=True)
        return
    request = {"config": new, "current_version": current.get("version")}
    with held_lease(target.client, target.app, machine_id) as nonce:
        updated = target.client.update_machine(target.app, machine_id, request, nonce=nonce)
    version = updated.get("version")
    click.echo(f"Machine {machine_id} updated to version {version}")
    warn_ignored(updated)
    if detach:
        return
    state = wait_for_state(
        target.client,
        target.app,
        machine_id,
        states=("started", "failed"),
        version=version,
        timeout=wait_timeout,
        progress=Progress(f"Waiting for machine {machine_id} to start..."),
    )
    _report_start(target, machine_id, state, None)


@machine.command("signal")
@app_command
@click.argument("machine_id")
@click.argument("signal")
def send_signal(target: Target, machine_id: str, signal: str) -> None:
    """Send SIGNAL (SIGHUP, USR1, 10, ...) to MACHINE_ID's main process."""
    value: str | int = int(signal) if signal.isdigit() else _signal_name(signal)
    target.client.signal_machine(target.app, machine_id, value)
    click.echo(f"Sent {value} to machine {machine_id}")


def _signal_name(text: str) -> str:
    # The Fly API takes full names only; accept the short ones people type.
    name = text.upper()
    return name if name.startswith("SIG") else f"SIG{name}"


# -- reading --------------------------------------------------------------------------


@machine.command("list")
@app_command
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the ids, oldest first.")
def list_machines(target: Target, as_json: bool, quiet: bool) -> None:
    """List the app's machines."""
    machines = target.client.list_machines(target.app)
    if as_json:
        print_json(machines)
        return
    if quiet:
        for m in sorted(machines, key=lambda m: m.get("created_at", "")):
            click.echo(m["id"])
        return
    if not machines:
        click.echo(f"No machines in app {target.app}.", err=True)
        return
    rows = [
        (
            m["id"],
            m.get("name", ""),
            m.get("state", ""),
            m.get("region", ""),
            image_label(m),
            m.get("private_ip", ""),
            checks_summary(m.get("checks")),
            ago(m.get("created_at")),
        )
        for m in sorted(machines, key=lambda m: m.get("created_at", ""))
    ]
    headers = ("ID", "NAME", "STATE", "REGION", "IMAGE", "IP", "CHECKS", "CREATED")
    click.echo(table(headers, rows))


@machine.command("status")
@app_command
@click.argument("machine_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def status(target: Target, machine_id: str, as_json: bool) -> None:
    """Show MACHINE_ID's details and recent events."""
    m = target.client.get_machine(target.app, machine_id)
    if as_json:
        print_json(m)
        return
    config = m.get("config") or {}
    details = [
        ("Machine ID", m["id"]),
        ("Name", m.get("name", "")),
        ("State", m.get("state", "")),
        ("Region", m.get("region", "")),
        ("Image", image_label(m)),
        ("Version", m.get("version", "")),
        ("Private IP", m.get("private_ip", "")),
        ("Guest", guest_label(config.get("guest"))),
        ("Command", command_label(config.get("init"))),
        ("Restart", restart_label(config)),
        ("Created", when(m.get("created_at"))),
        ("Updated", when(m.get("updated_at"))),
    ]
    if m.get("cordoned"):
        details.append(("Cordoned", "yes (receives no proxied traffic)"))
    click.echo(fields(details))
    checks = m.get("checks") or []
    if checks:
        click.echo("\nChecks")
        rows = [
            (c.get("name", ""), c.get("status", ""), ago(c.get("updated_at")), c.get("output", ""))
            for c in checks
        ]
        click.echo(table(("NAME", "STATUS", "UPDATED", "OUTPUT"), rows))
    events = (m.get("events") or [])[:EVENTS_SHOWN]
    if events:
        click.echo("\nRecent events")
        click.echo(events_table(events))


@machine.command("events")
@app_command
@click.argument("machine_id")
@click.option("--limit", type=click.IntRange(1, 50), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def events(target: Target, machine_id: str, limit: int, as_json: bool) -> None:
    """Show MACHINE_ID's events, newest first."""
    found = target.client.list_events(target.app, machine_id, limit=limit)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo(f"No events for machine {machine_id}.", err=True)
        return
    click.echo(events_table(found))


@machine.command("exec", context_settings={"ignore_unknown_options": True})
@app_command
@click.argument("machine_id")
@click.argument("command", nargs=-1, required=True)
@click.option("--timeout", type=click.IntRange(1, 600), default=30, show_default=True)
@click.option("--stdin", "stdin_text", default="", help="Text to feed the command's stdin.")
def exec_command(
    target: Target, machine_id: str, command: tuple[str, ...], timeout: int, stdin_text: str
) -> None:
    """Run COMMAND (after --) inside a running machine; exit with its exit code."""
    result = target.client.exec_machine(
        target.app, machine_id, command, timeout=timeout, stdin=stdin_text
    )
    click.echo(result.get("stdout", ""), nl=False)
    click.echo(result.get("stderr", ""), nl=False, err=True)
    raise SystemExit(int(result.get("exit_code", 1)))


@machine.command("ps")
@app_command
@click.argument("machine_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def ps(target: Target, machine_id: str, as_json: bool) -> None:
    """List the processes running in a machine."""
    processes = target.client.processes(target.app, machine_id)
    if as_json:
        print_json(processes)
        return
    rows = [
        [
            str(p["pid"]),
            f"{p['cpu'] / 1000:.2f}s",
            f"{p['rss'] // 1024} KiB",
            ", ".join(s["address"] for s in p.get("listen_sockets", [])),
            p["command"],
        ]
        for p in processes
    ]
    click.echo(table(["PID", "CPU", "RSS", "LISTENING", "COMMAND"], rows))
