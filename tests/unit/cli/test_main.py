"""Global behaviour: error reporting, the API URL, import cost, ``roost server``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import pytest

from roost.cli.main import COMMANDS, cli
from tests.unit.cli.fakes import FakeAPI, RunCLI


def test_api_errors_print_the_message_and_exit_1(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", "/v1/apps", (422, {"error": "app name 'web' is already taken", "status": "x"}))
    result = roost("apps", "create", "web")
    assert result.exit_code == 1
    assert result.stderr == "Error: app name 'web' is already taken\n"
    assert "Traceback" not in result.output


def test_errors_without_a_json_body(roost: RunCLI, api: FakeAPI) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(502, text="Bad Gateway"))
    result = roost("apps", "list", transport=transport)
    assert result.exit_code == 1
    assert result.stderr == "Error: Bad Gateway\n"


def test_a_success_that_is_not_json(roost: RunCLI) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, text="<html>"))
    result = roost("apps", "list", transport=transport)
    assert result.exit_code == 1
    assert "is --api-url pointing at a roost server?" in result.stderr


def test_connection_refused_suggests_starting_the_server(roost: RunCLI) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    result = roost(
        "--api-url", "http://127.0.0.1:9/", "apps", "list", transport=httpx.MockTransport(refuse)
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: cannot connect to the roost API at http://127.0.0.1:9; "
        "is `roost server` running there?"
    )


def test_timeouts_are_reported(roost: RunCLI) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    result = roost("apps", "list", transport=httpx.MockTransport(slow))
    assert result.exit_code == 1
    assert "did not answer in time" in result.stderr


def test_api_url_from_the_environment(roost: RunCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"apps": [], "total_apps": 0})

    monkeypatch.setenv("ROOST_API_URL", "http://10.0.0.2:4280")
    assert roost("apps", "list", transport=httpx.MockTransport(record)).exit_code == 0
    assert seen == ["http://10.0.0.2:4280/v1/apps"]


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from roost.cli.main import cli\n"
        "try: cli(['--help'])\n"
        "except SystemExit: pass\n"
        "heavy = {'httpx', 'fastapi', 'pydantic', 'uvicorn', 'roost.server', 'roost.cli.apps',"
        " 'roost.cli.machines'}\n"
        "print(sorted(heavy & set(sys.modules)), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "machine  Manage machines." in out.stdout
    assert out.stderr.strip() == "[]"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_help_matches_the_commands(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    assert command.help is not None
    assert COMMANDS[name][2] == command.help.splitlines()[0]


def test_version(roost: RunCLI) -> None:
    result = roost("--version", token=None)
    assert result.exit_code == 0
    assert result.stdout.startswith("roost, version ")


class FakeRun:
    def __init__(self, error: Exception | None = None) -> None:
        self.configs: list[Any] = []
        self.error = error

    def __call__(self, config: Any) -> None:
        self.configs.append(config)
        if self.error:
            raise self.error


def test_server_builds_the_config(
    roost: RunCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from roost import server

    fake = FakeRun()
    monkeypatch.setattr(server, "run", fake)
    result = roost(
        "server",
        "--data-dir",
        str(tmp_path),
        "--api-listen",
        "0.0.0.0:9999",
        "--region",
        "ams",
        "--driver",
        "process",
        "--no-registry",
        "--no-demo-images",
        "--cpus",
        "4",
        "--memory",
        "2048",
        token=None,
    )
    assert result.exit_code == 0, result.output
    (config,) = fake.configs
    assert config.data_dir == tmp_path
    assert config.api_listen == "0.0.0.0:9999"
    assert config.region == "ams"
    assert config.driver == "process"
    assert config.registry_listen is None
    assert config.seed_demo_images is False
    assert (config.cpus, config.memory_mb) == (4, 2048)


def test_server_defaults_and_global_data_dir(
    roost: RunCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from roost import server

    fake = FakeRun()
    monkeypatch.setattr(server, "run", fake)
    result = roost(
        "--data-dir", str(tmp_path), "server", "--registry-listen", "0.0.0.0:5001", token=None
    )
    assert result.exit_code == 0, result.output
    (config,) = fake.configs
    defaults = server.ServerConfig()
    assert config.data_dir == tmp_path
    assert config.registry_listen == "0.0.0.0:5001"
    assert (config.api_listen, config.region, config.driver) == (
        defaults.api_listen,
        defaults.region,
        defaults.driver,
    )
    assert config.seed_demo_images is True


def test_process_errors_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    from roost.roles import serving

    async def fails() -> None:
        raise serving.RoleError("the API cannot listen on 127.0.0.1:4280: in use")

    with pytest.raises(SystemExit) as exited:
        serving.run(fails, ())
    assert exited.value.code == 1
    assert capsys.readouterr().err == "Error: the API cannot listen on 127.0.0.1:4280: in use\n"


def test_server_registry_flags_exclude_each_other(roost: RunCLI) -> None:
    result = roost("server", "--no-registry", "--registry-listen", "x:1", token=None)
    assert result.exit_code == 2
    assert "exclude each other" in result.stderr
