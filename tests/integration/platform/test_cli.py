"""The `roost` command against a real server, as the README drives it."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.platform import RoostServer
from tests.integration.platform.helpers import http_get, ipv4, unique

pytestmark = pytest.mark.root


def ok(result: object) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"  # type: ignore[attr-defined]
    return result.stdout  # type: ignore[attr-defined]


def test_readme_flow(roost: RoostServer, demo_images: dict[str, str]) -> None:
    app = unique("cli")
    ok(roost.cli("apps", "create", app))
    assert app in ok(roost.cli("apps", "list"))

    out = roost.cli("machine", "run", demo_images["roost/hello"], "-a", app, "--port", "8080")
    ok(out)
    machines = json.loads(ok(roost.cli("machine", "list", "-a", app, "--json")))
    assert len(machines) == 1 and machines[0]["state"] == "started"
    machine = machines[0]
    mid = machine["id"]
    assert mid in out.stderr + out.stdout
    assert http_get(f"http://[{machine['private_ip']}]:8080/").text == "Hello from roost\n"
    assert http_get(f"http://{ipv4(machine, roost)}:8080/").text == "Hello from roost\n"

    table = ok(roost.cli("machine", "list", "-a", app))
    assert mid in table and "started" in table
    status = json.loads(ok(roost.cli("machine", "status", mid, "-a", app, "--json")))
    assert status["config"]["services"][0]["internal_port"] == 8080

    ok(roost.cli("machine", "stop", mid, "-a", app))
    assert (
        json.loads(ok(roost.cli("machine", "status", mid, "-a", app, "--json")))["state"]
        == "stopped"
    )
    ok(roost.cli("machine", "start", mid, "-a", app))
    assert http_get(f"http://{ipv4(machine, roost)}:8080/").text == "Hello from roost\n"

    ok(roost.cli("machine", "update", mid, "-a", app, "--vm-memory", "512", "--yes"))
    updated = json.loads(ok(roost.cli("machine", "status", mid, "-a", app, "--json")))
    assert updated["config"]["guest"]["memory_mb"] == 512
    assert updated["version"] != machine["version"]

    clone_out = ok(roost.cli("machine", "clone", mid, "-a", app))
    assert "started" in clone_out + clone_out
    listed = json.loads(ok(roost.cli("machine", "list", "-a", app, "--json")))
    assert len(listed) == 2
    clone = next(m for m in listed if m["id"] != mid)
    assert clone["image_ref"]["digest"] == updated["image_ref"]["digest"]

    denied = roost.cli("machine", "destroy", mid, "-a", app)
    assert denied.returncode == 1 and denied.stderr.startswith("Error:")
    for m in listed:
        ok(roost.cli("machine", "destroy", m["id"], "-a", app, "--force"))
    ok(roost.cli("apps", "destroy", app, "--yes"))
    assert app not in ok(roost.cli("apps", "list"))


def test_cli_errors_are_clear(roost: RoostServer) -> None:
    missing = roost.cli("machine", "list", "-a", "no-such-app")
    assert missing.returncode == 1 and "roost apps create no-such-app" in missing.stderr
    bad_token = roost.cli("--token", "wrong", "apps", "list")
    assert bad_token.returncode == 1 and "token" in bad_token.stderr
    down = roost.cli("--api-url", "http://127.0.0.1:9", "apps", "list")
    assert down.returncode == 1 and "roost server" in down.stderr
