"""Waiting for a machine to reach a state, with its progress on stderr.

The wait endpoint blocks for at most 60 seconds and answers 408 when time runs out,
so longer waits are a loop. Each round is kept short so the state shown stays fresh.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import click

from roost.cli.client import APIError, Client, ClientError

DEFAULT_TIMEOUT = 300
"""Seconds, like flyctl's --wait-timeout."""
STEP = 5
"""Seconds per wait request; the state shown is refreshed between requests."""
POLL_INTERVAL = 0.5
"""Seconds between event polls while waiting for a restart."""

# Settled states a running machine can be stopped into (auto_destroy ends in destroyed).
STOPPED_STATES = ("stopped", "suspended", "created", "failed", "destroyed")


class WaitTimeout(ClientError):
    """The machine did not reach the state in time; the message says where it is."""


class Progress:
    """One status line on stderr: rewritten in place on a terminal, a line per change
    otherwise (so logs of non-interactive runs stay readable)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._state: str | None = None
        self._live = sys.stderr.isatty()

    def show(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        text = f"{self._label} (state: {state})"
        if self._live:
            click.echo(f"\r\x1b[K{text}", err=True, nl=False)
        else:
            click.echo(text, err=True)

    def finish(self) -> None:
        if self._live and self._state is not None:
            click.echo(err=True)
        self._state = None


def wait_for_state(
    client: Client,
    app: str,
    machine_id: str,
    *,
    states: Sequence[str],
    progress: Progress,
    version: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The first of ``states`` the machine reaches; WaitTimeout after ``timeout`` seconds."""
    deadline = clock() + timeout
    state = "unknown"
    try:
        while (remaining := deadline - clock()) > 0:
            step = max(1, min(STEP, round(remaining)))
            try:
                waited = client.wait_machine(
                    app, machine_id, states=states, timeout=step, version=version
                )
                return str(waited["state"])
            except APIError as exc:
                if exc.status != 408:
                    raise
            state = client.get_machine(app, machine_id)["state"]
            progress.show(state)
    finally:
        progress.finish()
    raise WaitTimeout(
        f"machine {machine_id} did not reach {' or '.join(states)} within {timeout:g}s "
        f"(it is {state}); see `roost machine status {machine_id} -a {app}`"
    )


def wait_for_restart(
    client: Client,
    app: str,
    machine_id: str,
    *,
    after_event: str,
    progress: Progress,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """``started`` or ``failed``, as recorded by the first such event after ``after_event``.

    The wait endpoint cannot tell a restarted machine from one that has not stopped
    yet (both are ``started``), but the events the restart writes can.
    """
    deadline = clock() + timeout
    try:
        while clock() < deadline:
            fresh = [
                e for e in client.list_events(app, machine_id, limit=10) if e["id"] > after_event
            ]
            for event in reversed(fresh):
                if event["status"] in ("started", "failed"):
                    return str(event["status"])
            if fresh:
                progress.show(fresh[0]["status"])
            sleep(POLL_INTERVAL)
    finally:
        progress.finish()
    raise WaitTimeout(
        f"machine {machine_id} did not restart within {timeout:g}s; "
        f"see `roost machine status {machine_id} -a {app}`"
    )


def latest_event_id(client: Client, app: str, machine_id: str) -> str:
    events = client.list_events(app, machine_id, limit=1)
    return str(events[0]["id"]) if events else ""
