"""Fixtures: a fresh environment, a fake API, and ``roost`` to run the CLI against it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from roost.cli.main import cli
from roost.cli.session import Session
from tests.unit.cli.fakes import FakeAPI, RunCLI


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "ROOST_API_URL",
        "ROOST_API_TOKEN",
        "FLY_API_TOKEN",
        "ROOST_DATA_DIR",
        "ROOST_APP",
        "FLY_APP",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def roost(api: FakeAPI) -> RunCLI:
    """Run ``roost ARGS`` against ``api``; ``token=None`` leaves token discovery to the CLI."""

    def run(
        *args: str,
        token: str | None = "t0k",
        interactive: bool = False,
        input: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> Result:
        session = Session(
            transport=transport or httpx.MockTransport(api.handle), interactive=interactive
        )
        prefix = ["--token", token] if token else []
        return CliRunner().invoke(cli, [*prefix, *args], obj=session, input=input)

    return run
