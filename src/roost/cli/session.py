"""What every command shares: where the API is, how to authenticate, the terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from roost.cli.client import Client

if TYPE_CHECKING:
    import httpx

DEFAULT_API_URL = "http://127.0.0.1:4280"
TOKEN_ENV_VARS = ("ROOST_API_TOKEN", "FLY_API_TOKEN")
ADMIN_TOKEN_FILE = "admin-token"


def default_data_dir() -> Path:
    """The server's default data directory.

    The same rule as ``roost.roles.host.default_data_dir`` (a unit test keeps the two in
    step): importing the server's modules pulls in uvicorn and FastAPI, about a second.
    """
    if env := os.environ.get("ROOST_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/roost")
    return Path.home() / ".local/share/roost"


def resolve_token(flag: str | None, data_dir: Path | None, environ: Mapping[str, str]) -> str:
    """``--token``, then ``$ROOST_API_TOKEN``, ``$FLY_API_TOKEN``, then the admin token file."""
    if flag:
        return flag
    for var in TOKEN_ENV_VARS:
        if environ.get(var):
            return environ[var]
    path = (data_dir or default_data_dir()) / ADMIN_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise click.ClickException(
            f"no API token: pass --token or set ROOST_API_TOKEN (`roost server` saves the "
            f"admin token to {path} on its first start; --data-dir points elsewhere)"
        ) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot read the admin token from {path}: {exc.strerror}; "
            "pass --token or set ROOST_API_TOKEN"
        ) from None
    if not token:
        raise click.ClickException(f"the admin token file {path} is empty")
    return token


@dataclass
class Session:
    api_url: str = DEFAULT_API_URL
    token: str | None = None
    data_dir: Path | None = None
    transport: httpx.BaseTransport | None = None
    """Tests put an ``httpx.MockTransport`` here."""
    interactive: bool | None = None
    """Whether questions can be asked; ``None`` means "if stdin is a terminal"."""
    _client: Client | None = field(default=None, init=False, repr=False)

    def client(self) -> Client:
        if self._client is None:
            token = resolve_token(self.token, self.data_dir, os.environ)
            self._client = Client(self.api_url, token, transport=self.transport)
        return self._client

    def can_ask(self) -> bool:
        return self.interactive if self.interactive is not None else sys.stdin.isatty()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
