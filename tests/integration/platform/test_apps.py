"""The app workflow with the real `roost` binary: launch from a fly.toml, deploy, a
failed deploy rolled back, status, and a throwaway shell machine."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from roost.images.build import build_image, push
from roost.images.local_registry import LocalRegistry
from tests.fixtures.platform import RoostServer
from tests.fixtures.registry import run_async
from tests.integration.platform.helpers import http_get, unique, until

pytestmark = pytest.mark.root

# Two process groups on the busybox image: a web server whose check reads a file that
# exists (CHECK_PATH), and a worker with no services (so it gets a standby).
FLY_TOML = """
app = "{app}"
primary_region = "test"

[build]
  image = "{image}"

[env]
  GREETING = "{greeting}"

[processes]
  web = "/bin/httpd -f -p 8080 -h /etc"
  worker = "/bin/sleep inf"

[http_service]
  internal_port = 8080
  auto_stop_machines = "off"
  processes = ["web"]
  [[http_service.checks]]
    path = "{check_path}"
    interval = "1s"
    timeout = "1s"
"""


@pytest.fixture(scope="module")
def busybox_v2(local_registry: LocalRegistry, demo_images: dict[str, str]) -> str:
    """A second release of the busybox image: it also serves /etc/release."""
    ref = f"{local_registry.addr}/roost/busybox:v2"
    with tempfile.TemporaryDirectory(prefix="roost-v2-") as work:
        files: dict[str, bytes | Path] = {"/etc/release": b"v2\n"}
        layout = run_async(build_image(Path(work) / "image", tag="v2", files=files, cmd=["sh"]))
        run_async(push(layout, "v2", ref))
    return ref


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def write(path: Path, **values: str) -> None:
    path.write_text(FLY_TOML.format(**values))


def machines(roost: RoostServer, app: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(ok(roost.cli("machine", "list", "-a", app, "--json")))
    return listed


def group(listed: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [m for m in listed if m["config"]["metadata"].get("fly_process_group") == name]


def test_launch_deploy_roll_back_and_status(
    roost: RoostServer, demo_images: dict[str, str], busybox_v2: str, tmp_path: Path
) -> None:
    app = unique("apps")
    config = tmp_path / "fly.toml"
    image = demo_images["roost/busybox"]
    write(config, app=app, image=image, greeting="one", check_path="/passwd")

    out = ok(roost.cli("launch", "-c", str(config), "--yes"))
    assert f"Release v1 of app {app} is deployed" in out
    listed = machines(roost, app)
    web, worker = group(listed, "web"), group(listed, "worker")
    assert sorted(m["state"] for m in web) == ["started", "started"]
    assert all(m["checks"] and m["checks"][0]["status"] == "passing" for m in web)
    running = [m for m in worker if not m["config"].get("standbys")]
    standby = [m for m in worker if m["config"].get("standbys")]
    assert len(running) == len(standby) == 1
    assert running[0]["state"] == "started" and standby[0]["state"] in ("created", "stopped")
    assert standby[0]["config"]["standbys"] == [running[0]["id"]]
    assert standby[0]["config"]["env"]["FLY_STANDBY_FOR"] == running[0]["id"]
    served = http_get(f"http://[{web[0]['private_ip']}]:8080/passwd")
    assert served.status_code == 200 and served.text.startswith("root:")

    # A new release on a new image, rolled out one machine at a time.
    write(config, app=app, image=busybox_v2, greeting="two", check_path="/passwd")
    out = ok(roost.cli("deploy", "-c", str(config)))
    assert f"Release v2 of app {app} is deployed" in out
    v2 = {m["id"]: m for m in machines(roost, app)}
    assert set(v2) == {m["id"] for m in listed}
    for m in v2.values():
        assert m["config"]["env"]["GREETING"] == "two"
        assert m["config"]["metadata"]["fly_release_version"] == "2"
    assert v2[standby[0]["id"]]["state"] in ("created", "stopped")
    assert all(v2[m["id"]]["version"] != m["version"] for m in listed)
    for m in group(list(v2.values()), "web"):
        assert m["image_ref"]["tag"] == "v2"
        served = http_get(f"http://[{m['private_ip']}]:8080/release")
        assert served.status_code == 200 and served.text == "v2\n"

    # A release whose check fails: the first web machine is put back, nothing else moves.
    write(config, app=app, image=busybox_v2, greeting="three", check_path="/missing")
    failed = roost.cli("deploy", "-c", str(config), "--wait-timeout", "10")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "release v3 failed" in failed.stderr
    assert "its checks did not pass within 10s" in failed.stderr
    assert "got their previous config back" in failed.stderr
    after = {m["id"]: m for m in machines(roost, app)}
    assert set(after) == set(v2)
    for m in after.values():
        assert m["config"]["env"]["GREETING"] == "two"
        assert m["config"]["metadata"]["fly_release_version"] == "2"
    web_after = [after[m["id"]] for m in web]
    assert all(m["state"] == "started" for m in web_after)
    assert "rolled back" in failed.stdout

    # A rolled-back machine is started at once; its checks pass a moment later.
    def web_healthy() -> bool:
        web_now = group(machines(roost, app), "web")
        return all(m["checks"] and m["checks"][0]["status"] == "passing" for m in web_now)

    until(web_healthy)
    status = ok(roost.cli("status", "-a", app))
    assert "Release:  v2" in status
    rows = status.split("Machines\n")[1].splitlines()
    assert len([r for r in rows if r.startswith("web ")]) == 2
    assert any(r.startswith("worker") and "†" in r for r in rows)
    assert all("1/1" in r for r in rows if r.startswith("web "))
    for m in after.values():
        assert m["id"] in status


def test_shell_machine_is_destroyed_when_the_shell_exits(
    roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = unique("shell")
    ok(roost.cli("apps", "create", app))
    result = roost.cli(
        "machine", "run", demo_images["roost/busybox"], "--shell", "-a", app, input="exit 3\n"
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "is started" in result.stdout and "destroyed" in result.stderr
    assert machines(roost, app) == []
