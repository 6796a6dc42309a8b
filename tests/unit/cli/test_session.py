"""Token discovery: --token, $ROOST_API_TOKEN, $FLY_API_TOKEN, then DATA_DIR/admin-token."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.cli.session import default_data_dir
from tests.unit.cli.fakes import FakeAPI, RunCLI


@pytest.fixture
def apps_api(api: FakeAPI) -> FakeAPI:
    api.on("GET", "/v1/apps", (200, {"apps": [], "total_apps": 0}))
    return api


def sent_token(api: FakeAPI) -> str:
    return api.calls[-1].headers["authorization"]


def write_token(data_dir: Path, token: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "admin-token").write_text(token + "\n")


def test_flag_beats_everything(
    roost: RunCLI, apps_api: FakeAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROOST_API_TOKEN", "from-roost-env")
    monkeypatch.setenv("FLY_API_TOKEN", "from-fly-env")
    write_token(tmp_path, "from-file")
    result = roost("--data-dir", str(tmp_path), "apps", "list", token="from-flag")
    assert result.exit_code == 0, result.output
    assert sent_token(apps_api) == "Bearer from-flag"


def test_roost_env_beats_fly_env(
    roost: RunCLI, apps_api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOST_API_TOKEN", "from-roost-env")
    monkeypatch.setenv("FLY_API_TOKEN", "from-fly-env")
    assert roost("apps", "list", token=None).exit_code == 0
    assert sent_token(apps_api) == "Bearer from-roost-env"


def test_fly_env_beats_the_file(
    roost: RunCLI, apps_api: FakeAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", "from-fly-env")
    write_token(tmp_path, "from-file")
    assert roost("--data-dir", str(tmp_path), "apps", "list", token=None).exit_code == 0
    assert sent_token(apps_api) == "Bearer from-fly-env"


def test_admin_token_file_in_the_data_dir(
    roost: RunCLI, apps_api: FakeAPI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_token(tmp_path / "flag", "from-flag-dir")
    write_token(tmp_path / "env", "from-env-dir")
    monkeypatch.setenv("ROOST_DATA_DIR", str(tmp_path / "env"))
    assert roost("apps", "list", token=None).exit_code == 0
    assert sent_token(apps_api) == "Bearer from-env-dir"
    assert roost("--data-dir", str(tmp_path / "flag"), "apps", "list", token=None).exit_code == 0
    assert sent_token(apps_api) == "Bearer from-flag-dir"


def test_macaroon_tokens_keep_their_scheme(
    roost: RunCLI, apps_api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLY_API_TOKEN", "FlyV1 fm2_abc,fm2_def")
    assert roost("apps", "list", token=None).exit_code == 0
    assert sent_token(apps_api) == "FlyV1 fm2_abc,fm2_def"


def test_no_token_anywhere_is_a_clear_error(
    roost: RunCLI, apps_api: FakeAPI, tmp_path: Path
) -> None:
    result = roost("--data-dir", str(tmp_path), "apps", "list", token=None)
    assert result.exit_code == 1
    assert "Error: no API token: pass --token or set ROOST_API_TOKEN" in result.stderr
    assert str(tmp_path / "admin-token") in result.stderr
    assert apps_api.calls == []


def test_unreadable_token_file(roost: RunCLI, tmp_path: Path) -> None:
    (tmp_path / "admin-token").mkdir(parents=True)
    result = roost("--data-dir", str(tmp_path), "apps", "list", token=None)
    assert result.exit_code == 1
    assert "Error: cannot read the admin token" in result.stderr


def test_default_data_dir_matches_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from roost.roles import host

    assert default_data_dir() == host.default_data_dir()
    monkeypatch.setenv("ROOST_DATA_DIR", str(tmp_path))
    assert default_data_dir() == host.default_data_dir() == tmp_path
