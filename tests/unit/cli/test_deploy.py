"""launch, deploy (each strategy), status and the group-aware scale commands against a
stateful fake API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from roost.cli import rollout
from tests.unit.cli.fake_platform import FakePlatform
from tests.unit.cli.fakes import RunCLI

APP = "shop"
IMAGE = "registry.local/shop:1"
FLY_TOML = f"""
app = "{APP}"
primary_region = "ams"

[build]
  image = "{IMAGE}"

[env]
  MODE = "production"

[processes]
  web = "/bin/httpd -f -p 8080 -h /www"
  worker = "sh -c 'sleep inf'"

[http_service]
  internal_port = 8080
  auto_stop_machines = "stop"
  min_machines_running = 1
  processes = ["web"]
  [[http_service.checks]]
    path = "/"
    interval = "1s"

[[vm]]
  memory = 512
"""

Run = Callable[..., Result]


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePlatform:
    fake = FakePlatform()
    monkeypatch.setattr(rollout, "CLOCK", fake.clock())
    monkeypatch.chdir(tmp_path)
    return fake


@pytest.fixture
def run(roost: RunCLI, platform: FakePlatform) -> Run:
    def invoke(*args: str, **kwargs: Any) -> Result:
        return roost(*args, transport=platform.transport(), **kwargs)

    return invoke


@pytest.fixture
def launched(run: Run, platform: FakePlatform, tmp_path: Path) -> FakePlatform:
    """The app after its first deploy: 2 web machines, 1 worker and its standby."""
    (tmp_path / "fly.toml").write_text(FLY_TOML)
    result = run("launch", "--yes")
    assert result.exit_code == 0, result.output
    platform.steps.clear()
    platform.requests.clear()
    return platform


def new_image(tmp_path: Path, image: str, strategy: str | None = None) -> None:
    text = FLY_TOML.replace(IMAGE, image)
    if strategy:
        text += f'\n[deploy]\n  strategy = "{strategy}"\n'
    (tmp_path / "fly.toml").write_text(text)


def images(platform: FakePlatform, group: str) -> list[str]:
    return [m["config"]["image"] for m in platform.group(group)]


# -- launch -------------------------------------------------------------------------------


def test_first_deploy_follows_flyctls_shape(
    run: Run, platform: FakePlatform, tmp_path: Path
) -> None:
    (tmp_path / "fly.toml").write_text(FLY_TOML)
    result = run("launch", "--yes")
    assert result.exit_code == 0, result.output
    assert APP in platform.apps
    web, worker = platform.group("web"), platform.group("worker")
    assert [m["state"] for m in web] == ["started", "started"]
    assert all(m["region"] == "ams" for m in web + worker)
    running, standby = worker
    assert running["state"] == "started" and "standbys" not in running["config"]
    assert standby["state"] == "created"
    assert standby["config"]["standbys"] == [running["id"]]
    assert standby["config"]["env"]["FLY_STANDBY_FOR"] == running["id"]
    for m in web + worker:
        metadata = m["config"]["metadata"]
        assert metadata["fly_platform_version"] == "v2"
        assert metadata["fly_release_version"] == "1"
        assert metadata["fly_release_id"]
    for m in [*web, running]:
        assert m["config"]["env"] == {"MODE": "production", "PRIMARY_REGION": "ams"}
    assert web[0]["config"]["services"][0]["checks"] == [
        {"type": "http", "interval": "1s", "path": "/"}
    ]
    assert "Created app shop" in result.output
    assert "Process group 'worker': create 1 machine(s) + 1 standby" in result.output
    assert "Release v1 of app shop is deployed" in result.output
    assert f"created as a standby for {running['id']}" in result.output


def test_launch_without_a_config_writes_one(
    run: Run, platform: FakePlatform, tmp_path: Path
) -> None:
    result = run("launch", "--name", "hello", "--image", IMAGE, "--region", "fra", "--yes")
    assert result.exit_code == 0, result.output
    assert "Wrote roost.toml" in result.output
    written = (tmp_path / "roost.toml").read_text()
    assert 'app = "hello"' in written and 'primary_region = "fra"' in written
    # No services: one machine and a standby, in the primary region.
    machines = platform.live()
    assert [m["state"] for m in machines] == ["started", "created"]
    assert {m["region"] for m in machines} == {"fra"}


def test_launch_needs_a_config_or_flags(run: Run) -> None:
    result = run("launch", "--yes")
    assert result.exit_code == 1
    assert "no roost.toml or fly.toml here" in result.stderr


def test_launch_no_deploy_only_creates_the_app(
    run: Run, platform: FakePlatform, tmp_path: Path
) -> None:
    (tmp_path / "fly.toml").write_text(FLY_TOML)
    result = run("launch", "--no-deploy", "--yes")
    assert result.exit_code == 0, result.output
    assert APP in platform.apps and not platform.live()


def test_launch_asks_first(run: Run, platform: FakePlatform, tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text(FLY_TOML)
    result = run("launch", interactive=True, input="n\n")
    assert result.exit_code == 0
    assert "Not launched." in result.stderr and not platform.apps


def test_a_config_error_names_the_key(run: Run, tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text(
        FLY_TOML.replace("internal_port = 8080", 'internal_port = "x"')
    )
    result = run("deploy")
    assert result.exit_code == 1
    assert "http_service.internal_port: expected an integer (got 'x')" in result.stderr


# -- deploy strategies ----------------------------------------------------------------------


def test_rolling_updates_one_machine_at_a_time(
    launched: FakePlatform, run: Run, tmp_path: Path
) -> None:
    new_image(tmp_path, "registry.local/shop:2")
    result = run("deploy")
    assert result.exit_code == 0, result.output
    assert images(launched, "web") == images(launched, "worker") == ["registry.local/shop:2"] * 2
    assert [s.action for s in launched.steps] == ["update"] * 4
    web = launched.group("web")
    assert all(m["config"]["metadata"]["fly_release_version"] == "2" for m in web)
    running, standby = launched.group("worker")
    # The standby stays stopped and stays a standby.
    assert standby["state"] == "created"
    assert standby["config"]["standbys"] == [running["id"]]
    updates = [b for method, _, b in launched.requests if method == "POST" and b and "config" in b]
    assert [bool(b.get("skip_launch")) for b in updates] == [False, False, False, True]
    assert "healthy, 1/1 checks passing" in result.output
    assert "Release v2 of app shop is deployed" in result.output


def test_rolling_rolls_back_when_a_check_fails(
    launched: FakePlatform, run: Run, tmp_path: Path
) -> None:
    launched.unhealthy = lambda config: config["image"] == "registry.local/shop:bad"
    first, second = launched.group("web")
    new_image(tmp_path, "registry.local/shop:bad")
    result = run("deploy", "--wait-timeout", "30")
    assert result.exit_code == 1
    assert "release v2 failed: machine " + first["id"] in result.stderr
    assert "its checks did not pass within 30s: servicecheck-00: critical" in result.stderr
    assert "the machines updated so far got their previous config back" in result.stderr
    # The first machine was updated and put back; nothing else was touched.
    assert [(s.action, s.machine_id) for s in launched.steps] == [
        ("update", first["id"]),
        ("update", first["id"]),
    ]
    assert images(launched, "web") == [IMAGE, IMAGE]
    assert launched.machines[second["id"]]["version"] == second["version"]
    summary = result.stdout.split("MACHINE")[1]
    assert "updated, failed: its checks did not pass" in summary and "rolled back" in summary


def test_rolling_stops_at_a_machine_that_exits(
    launched: FakePlatform, run: Run, tmp_path: Path
) -> None:
    launched.exits = lambda config: config["image"] == "registry.local/shop:crash"
    new_image(tmp_path, "registry.local/shop:crash")
    result = run("deploy")
    assert result.exit_code == 1
    assert "it is stopped instead of started" in result.stderr
    assert images(launched, "web") == [IMAGE, IMAGE]


def test_immediate_updates_everything_without_waiting_for_checks(
    launched: FakePlatform, run: Run, tmp_path: Path
) -> None:
    launched.unhealthy = lambda config: True
    new_image(tmp_path, "registry.local/shop:2", strategy="immediate")
    result = run("deploy")
    assert result.exit_code == 0, result.output
    assert [s.action for s in launched.steps] == ["update"] * 4
    assert images(launched, "web") == ["registry.local/shop:2"] * 2


def test_immediate_reports_machines_that_do_not_start(
    launched: FakePlatform, run: Run, tmp_path: Path
) -> None:
    launched.exits = lambda config: config["image"] == "registry.local/shop:crash"
    new_image(tmp_path, "registry.local/shop:crash", strategy="immediate")
    result = run("deploy")
    assert result.exit_code == 1
    assert "3 machine(s) failed; an immediate deploy is not undone" in result.stderr
    assert images(launched, "web") == ["registry.local/shop:crash"] * 2


def test_canary_first_then_rolling(launched: FakePlatform, run: Run, tmp_path: Path) -> None:
    new_image(tmp_path, "registry.local/shop:2")
    result = run("deploy", "--strategy", "canary")
    assert result.exit_code == 0, result.output
    actions = [s.action for s in launched.steps]
    # One canary per group with a running machine, created and destroyed before any update.
    assert actions == ["create", "destroy", "create", "destroy"] + ["update"] * 4
    canaries = [launched.machines[s.machine_id] for s in launched.steps if s.action == "create"]
    assert all(c["config"]["metadata"]["fly_canary"] == "true" for c in canaries)
    assert all(c["state"] == "destroyed" for c in canaries)
    assert images(launched, "web") == ["registry.local/shop:2"] * 2


def test_a_failed_canary_changes_nothing(launched: FakePlatform, run: Run, tmp_path: Path) -> None:
    launched.unhealthy = lambda config: config["image"] == "registry.local/shop:bad"
    new_image(tmp_path, "registry.local/shop:bad")
    result = run("deploy", "--strategy", "canary", "--wait-timeout", "5")
    assert result.exit_code == 1
    assert "the canary was destroyed and no machine was changed" in result.stderr
    assert [s.action for s in launched.steps] == ["create", "destroy"]
    assert images(launched, "web") == [IMAGE, IMAGE]


def test_bluegreen_replaces_every_machine(launched: FakePlatform, run: Run, tmp_path: Path) -> None:
    blues = {m["id"] for m in launched.live()}
    new_image(tmp_path, "registry.local/shop:2", strategy="bluegreen")
    result = run("deploy")
    assert result.exit_code == 0, result.output
    greens = launched.live()
    assert len(greens) == 4 and not blues & {m["id"] for m in greens}
    assert all(m["config"]["image"] == "registry.local/shop:2" for m in greens)
    assert not any(m["cordoned"] for m in greens)
    running, standby = launched.group("worker")
    assert standby["config"]["standbys"] == [running["id"]]
    assert standby["config"]["env"]["FLY_STANDBY_FOR"] == running["id"]
    actions = [s.action for s in launched.steps]
    # Greens first (out of rotation), then they take traffic, then the blues go.
    assert actions[:4] == ["create"] * 4
    assert actions.index("uncordon") < actions.index("destroy")
    assert {s.machine_id for s in launched.steps if s.action == "destroy"} == blues


def test_a_failed_bluegreen_removes_the_greens(
    launched: FakePlatform, run: Run, tmp_path: Path
) -> None:
    launched.unhealthy = lambda config: config["image"] == "registry.local/shop:bad"
    blues = sorted(m["id"] for m in launched.live())
    new_image(tmp_path, "registry.local/shop:bad", strategy="bluegreen")
    result = run("deploy", "--wait-timeout", "5")
    assert result.exit_code == 1
    assert "the new machines were destroyed; the old ones kept serving" in result.stderr
    assert sorted(m["id"] for m in launched.live()) == blues
    assert images(launched, "web") == [IMAGE, IMAGE]


def test_bluegreen_needs_checks(launched: FakePlatform, run: Run, tmp_path: Path) -> None:
    text = FLY_TOML.replace('  [[http_service.checks]]\n    path = "/"\n    interval = "1s"\n', "")
    (tmp_path / "fly.toml").write_text(text)
    result = run("deploy", "--strategy", "bluegreen")
    assert result.exit_code == 1
    assert "the bluegreen strategy needs health checks" in result.stderr
    assert not launched.steps


def test_a_removed_group_loses_its_machines(
    launched: FakePlatform, run: Run, tmp_path: Path
) -> None:
    workers = {m["id"] for m in launched.group("worker")}
    text = FLY_TOML.replace("  worker = \"sh -c 'sleep inf'\"\n", "")
    (tmp_path / "fly.toml").write_text(text)
    result = run("deploy")
    assert result.exit_code == 0, result.output
    assert "Process group 'worker': destroy 2 machine(s)" in result.output
    assert {s.machine_id for s in launched.steps if s.action == "destroy"} == workers
    assert not launched.group("worker")


def test_a_new_group_is_launched_beside_updates(
    launched: FakePlatform, run: Run, tmp_path: Path
) -> None:
    text = FLY_TOML.replace("[processes]\n", '[processes]\n  cron = "crond -f"\n')
    (tmp_path / "fly.toml").write_text(text)
    result = run("deploy")
    assert result.exit_code == 0, result.output
    assert [m["state"] for m in launched.group("cron")] == ["started", "created"]
    assert len(launched.group("web")) == 2


# -- mounts -------------------------------------------------------------------------------

MOUNTED = FLY_TOML + '\n[mounts]\n  source = "data"\n  destination = "/data"\n'


def test_mounts_need_the_volumes_api(run: Run, platform: FakePlatform, tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text(MOUNTED)
    result = run("launch", "--yes")
    assert result.exit_code == 1
    assert "volumes must exist before a deploy can attach them" in result.stderr
    assert not platform.live()


def test_mounts_take_a_free_volume_by_name(
    run: Run, platform: FakePlatform, tmp_path: Path
) -> None:
    platform.volumes = [
        {"id": "vol_taken", "name": "data", "region": "ams", "state": "created",
         "attached_machine_id": "x"},
        {"id": "vol_free1", "name": "data", "region": "ams", "state": "created"},
        {"id": "vol_free2", "name": "data", "region": "ams", "state": "created"},
    ]  # fmt: skip
    (tmp_path / "fly.toml").write_text(MOUNTED)
    result = run("launch", "--yes")
    assert result.exit_code == 0, result.output
    # One machine per group: a volume belongs to one machine.
    web, worker = platform.group("web"), platform.group("worker")
    assert len(web) == len(worker) == 1
    mounts = {m["config"]["mounts"][0]["volume"] for m in web + worker}
    assert mounts == {"vol_free1", "vol_free2"}
    assert web[0]["config"]["mounts"][0] == {"volume": "vol_free1", "path": "/data", "name": "data"}


def test_mounts_without_a_free_volume(run: Run, platform: FakePlatform, tmp_path: Path) -> None:
    platform.volumes = []
    (tmp_path / "fly.toml").write_text(MOUNTED)
    result = run("launch", "--yes")
    assert result.exit_code == 1
    assert "no unattached volume of that name in region ams" in result.stderr
    assert "(`roost volumes create data -r ams -a shop`)" in result.stderr


# -- status ---------------------------------------------------------------------------------


def test_status_shows_groups_health_and_standbys(launched: FakePlatform, run: Run) -> None:
    result = run("status", "-a", APP)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Release:  v1" in out
    rows = out.split("Machines\n")[1].splitlines()
    assert rows[0].split() == [
        "PROCESS", "ID", "VERSION", "REGION", "STATE", "CHECKS", "IMAGE", "LAST", "UPDATED"
    ]  # fmt: skip
    web = [r.split() for r in rows[1:] if r.startswith("web")]
    assert [r[2:6] for r in web] == [["v1", "ams", "started", "1/1"]] * 2
    standby = next(r for r in rows if "†" in r)
    assert standby.startswith("worker") and "created" in standby
    assert "† standby" in out


# -- scale ----------------------------------------------------------------------------------


def test_scale_count_per_process_group(launched: FakePlatform, run: Run) -> None:
    result = run("scale", "count", "3", "-a", APP, "--process-group", "web", "--yes")
    assert result.exit_code == 0, result.output
    web = launched.group("web")
    assert len(web) == 3 and len(launched.group("worker")) == 2
    assert web[-1]["config"]["metadata"]["fly_process_group"] == "web"


def test_scale_count_wants_a_group_when_there_are_several(launched: FakePlatform, run: Run) -> None:
    result = run("scale", "count", "3", "-a", APP, "--yes")
    assert result.exit_code == 1
    assert "several process groups (web, worker)" in result.stderr
    unknown = run("scale", "count", "3", "-a", APP, "-g", "db", "--yes")
    assert "no machines in process group 'db' (it has web, worker)" in unknown.stderr


def test_scale_vm_resizes_a_group_one_at_a_time(launched: FakePlatform, run: Run) -> None:
    result = run("scale", "vm", "shared-cpu-2x", "-a", APP, "--process-group", "web")
    assert result.exit_code == 0, result.output
    for m in launched.group("web"):
        assert m["config"]["guest"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}
    assert all(m["config"]["guest"]["cpus"] == 1 for m in launched.group("worker"))
    assert [s.action for s in launched.steps] == ["update", "update"]
    assert "shared, 1 CPU, 512 MB -> shared, 2 CPUs, 512 MB" in result.output


def test_scale_vm_with_memory_and_unknown_sizes(launched: FakePlatform, run: Run) -> None:
    result = run("scale", "vm", "performance-1x", "--vm-memory", "4096", "-a", APP, "-g", "web")
    assert result.exit_code == 0, result.output
    guest = launched.group("web")[0]["config"]["guest"]
    assert guest == {"cpu_kind": "performance", "cpus": 1, "memory_mb": 4096}
    bad = run("scale", "vm", "huge", "-a", APP, "-g", "web")
    assert bad.exit_code == 2 and "unknown size 'huge'" in bad.stderr


def test_scale_memory_keeps_stopped_machines_stopped(launched: FakePlatform, run: Run) -> None:
    result = run("scale", "memory", "1024", "-a", APP, "-g", "worker")
    assert result.exit_code == 0, result.output
    running, standby = launched.group("worker")
    assert (
        running["config"]["guest"]["memory_mb"] == standby["config"]["guest"]["memory_mb"] == 1024
    )
    assert running["state"] == "started" and standby["state"] == "created"
    assert standby["config"]["standbys"] == [running["id"]]


def test_scale_memory_rolls_back_on_failure(launched: FakePlatform, run: Run) -> None:
    launched.exits = lambda config: config["guest"]["memory_mb"] == 64
    result = run("scale", "memory", "64", "-a", APP, "-g", "web")
    assert result.exit_code == 1
    assert "resizing failed" in result.stderr
    assert [m["config"]["guest"]["memory_mb"] for m in launched.group("web")] == [512, 512]


def test_scale_memory_without_a_group_resizes_every_machine(
    launched: FakePlatform, run: Run
) -> None:
    result = run("scale", "memory", "1024", "-a", APP)
    assert result.exit_code == 0, result.output
    assert [m["config"]["guest"]["memory_mb"] for m in launched.live()] == [1024] * 4
    missing = run("scale", "memory", "1024", "-a", APP, "-g", "db")
    assert missing.exit_code == 1
    assert "app shop has no machines in process group 'db' to resize" in missing.stderr
