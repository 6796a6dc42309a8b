from __future__ import annotations

import json

from tests.unit.cli.fakes import FakeAPI, RunCLI

APPS = {
    "apps": [
        {
            "id": "a1",
            "name": "web",
            "status": "deployed",
            "machine_count": 2,
            "volume_count": 0,
            "network": "default",
            "organization": {"name": "personal", "slug": "personal"},
        },
        {
            "id": "a2",
            "name": "api",
            "status": "pending",
            "machine_count": 0,
            "volume_count": 0,
            "network": "default",
            "organization": {"name": "acme", "slug": "acme"},
        },
    ],
    "total_apps": 2,
}


def test_create(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", "/v1/apps", (201, {"id": "a1", "created_at": 1714564800000}))
    result = roost("apps", "create", "web", "--org", "acme")
    assert result.exit_code == 0, result.output
    (call,) = api.calls
    assert call.body == {"name": "web", "org_slug": "acme"}
    assert call.headers["authorization"] == "Bearer t0k"
    assert result.stdout == "New app created: web\n"


def test_list_table(roost: RunCLI, api: FakeAPI) -> None:
    api.on("GET", "/v1/apps", (200, APPS))
    result = roost("apps", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME  ORG       STATUS    MACHINES",
        "api   acme      pending   0",
        "web   personal  deployed  2",
    ]


def test_list_json_is_the_api_body(roost: RunCLI, api: FakeAPI) -> None:
    api.on("GET", "/v1/apps", (200, APPS))
    result = roost("apps", "list", "--json", "--org", "acme")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == APPS
    assert api.calls[0].params == {"org_slug": ["acme"]}


def test_list_empty(roost: RunCLI, api: FakeAPI) -> None:
    api.on("GET", "/v1/apps", (200, {"apps": [], "total_apps": 0}))
    result = roost("apps", "list")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "roost apps create" in result.stderr


def test_destroy_asks_and_stops_on_no(roost: RunCLI, api: FakeAPI) -> None:
    result = roost("apps", "destroy", "web", interactive=True, input="n\n")
    assert result.exit_code == 0, result.output
    assert "Destroy app 'web' and all its machines?" in result.stderr
    assert api.to("DELETE", "/v1/apps/web") == []


def test_destroy_asks_and_goes_on_yes(roost: RunCLI, api: FakeAPI) -> None:
    api.on("DELETE", "/v1/apps/web", (202, None))
    result = roost("apps", "destroy", "web", interactive=True, input="y\n")
    assert result.exit_code == 0, result.output
    (call,) = api.to("DELETE", "/v1/apps/web")
    assert call.params == {"force": ["false"]}
    assert result.stdout == "Destroyed app web\n"


def test_destroy_needs_yes_without_a_terminal(roost: RunCLI, api: FakeAPI) -> None:
    result = roost("apps", "destroy", "web")
    assert result.exit_code == 1
    assert "Pass --yes" in result.stderr
    assert api.calls == []


def test_destroy_yes_force(roost: RunCLI, api: FakeAPI) -> None:
    api.on("DELETE", "/v1/apps/web", (202, None))
    result = roost("apps", "destroy", "web", "--yes", "--force")
    assert result.exit_code == 0, result.output
    assert api.calls[0].params == {"force": ["true"]}


def test_destroy_with_running_machines_hints_at_force(roost: RunCLI, api: FakeAPI) -> None:
    message = "failed_precondition: app 'web' has running machines (m1); stop them first"
    api.on("DELETE", "/v1/apps/web", (412, {"error": message}))
    result = roost("apps", "destroy", "web", "--yes")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message} (--force does that)\n"
