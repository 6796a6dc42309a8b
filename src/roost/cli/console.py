"""``roost console``: an interactive shell in a running machine, on a real terminal."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from urllib.parse import urlencode

import click

from roost.cli.client import authorization
from roost.cli.machines import APP_ENV_VARS
from roost.cli.session import Session, resolve_token

SHELL = "/bin/sh"


@click.command("console")
@click.argument("machine_id")
@click.option("-a", "--app", "app_name", envvar=list(APP_ENV_VARS), metavar="APP", help="App name.")
@click.option("--command", "command", default=SHELL, show_default=True, help="What to run.")
@click.pass_obj
def console(session: Session, machine_id: str, app_name: str | None, command: str) -> None:
    """Open a shell in a running machine.

    The terminal is the machine's (Ctrl-C included) until the shell exits; roost then
    exits with the shell's exit code.
    """
    if not app_name:
        raise click.ClickException("no app given: pass -a/--app or set ROOST_APP")
    raise SystemExit(open_console(session, app_name, machine_id, command))


def open_console(session: Session, app: str, machine_id: str, command: str = SHELL) -> int:
    """Run ``command`` in the machine on this terminal until it exits; its exit code."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    cols, rows = shutil.get_terminal_size()
    query = urlencode([("cols", cols), ("rows", rows), *(("command", c) for c in command.split())])
    base = session.api_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    url = f"{base}/v1/apps/{app}/machines/{machine_id}/console?{query}"
    token = resolve_token(session.token, session.data_dir, os.environ)
    try:
        ws = connect(url, additional_headers={"Authorization": authorization(token)})
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise click.ClickException(f"the console was refused: HTTP {status}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot reach {session.api_url}: {exc}") from None
    exit_code = 1
    with ws, _raw_terminal():
        _forward_resizes(ws)
        threading.Thread(target=_send_stdin, args=(ws,), daemon=True).start()
        try:
            for message in ws:
                if isinstance(message, bytes):
                    sys.stdout.buffer.write(message)
                    sys.stdout.buffer.flush()
                else:
                    exit_code = int(json.loads(message).get("exit_code", 1))
        except ConnectionClosed:
            pass
    if ws.close_code not in (None, 1000):
        raise click.ClickException(ws.close_reason or f"console closed ({ws.close_code})")
    return exit_code


def _send_stdin(ws: object) -> None:
    while True:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            return
        if not data:
            return
        with contextlib.suppress(Exception):
            ws.send(data)  # type: ignore[attr-defined]


def _forward_resizes(ws: object) -> None:
    if not sys.stdout.isatty():
        return

    def resized(_: int, __: FrameType | None) -> None:
        cols, rows = shutil.get_terminal_size()
        with contextlib.suppress(Exception):
            ws.send(json.dumps({"resize": {"cols": cols, "rows": rows}}))  # type: ignore[attr-defined]

    signal.signal(signal.SIGWINCH, resized)


@contextlib.contextmanager
def _raw_terminal() -> Iterator[None]:
    """Keys go to the machine as typed (Ctrl-C included) while the console is open."""
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(sys.stdin.fileno())
    tty.setraw(sys.stdin.fileno())
    try:
        yield
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
