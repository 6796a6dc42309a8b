from __future__ import annotations

import json

import pytest

from roost.cli.machines import LAUNCH_STATES, SHELL_IMAGE
from roost.cli.wait import STOPPED_STATES
from tests.unit.cli.fakes import APP, MACHINE_PATH, MID, FakeAPI, RunCLI, leased, machine

MACHINES = f"/v1/apps/{APP}/machines"
NONCE = "5c35f65c9f95"
TIMEOUT_408 = (408, {"error": "deadline_exceeded: machine failed to reach desired state"})
LEASE_HELD = (
    "aborted: machine ID 3d8d9e1c5e6f78 lease currently held by ci, expires at 2024-05-01T12:02:00Z"
)


def started(version: str = "01V1") -> tuple[int, dict[str, object]]:
    return 200, {"ok": True, "state": "started", "version": version}


# -- run --------------------------------------------------------------------------------


def test_run_builds_the_config_and_waits_through_a_408(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", MACHINES, (200, machine(state="created", version="01V1")))
    api.on("GET", f"{MACHINE_PATH}/wait", TIMEOUT_408, started())
    api.on("GET", MACHINE_PATH, (200, machine(state="starting")))
    result = roost(
        "machine",
        "run",
        "alpine:3.20",
        "-a",
        APP,
        "--name",
        "quiet-sun-1234",
        "--region",
        "local",
        "--port",
        "8080",
        "-p",
        "443:8080/tcp:tls:http",
        "-e",
        "A=1",
        "--env",
        "B=x=y",
        "--vm-memory",
        "512",
        "--metadata",
        "team=core",
        "--",
        "sh",
        "-c",
        "echo hi; sleep inf",
    )
    assert result.exit_code == 0, result.output
    (create,) = api.to("POST", MACHINES)
    assert create.headers["authorization"] == "Bearer t0k"
    assert create.body == {
        "name": "quiet-sun-1234",
        "region": "local",
        "config": {
            "image": "alpine:3.20",
            "init": {"cmd": ["sh", "-c", "echo hi; sleep inf"]},
            "env": {"A": "1", "B": "x=y"},
            "metadata": {"team": "core"},
            "services": [
                {
                    "protocol": "tcp",
                    "internal_port": 8080,
                    "ports": [
                        {"port": 8080, "handlers": ["http"]},
                        {"port": 443, "handlers": ["tls", "http"]},
                    ],
                }
            ],
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
            "restart": {"policy": "always"},
        },
    }
    waits = api.to("GET", f"{MACHINE_PATH}/wait")
    assert len(waits) == 2
    assert waits[0].params == {"state": list(LAUNCH_STATES), "timeout": ["5"], "version": ["01V1"]}
    assert result.stderr == f"Waiting for machine {MID} to start... (state: starting)\n"
    assert result.stdout.splitlines() == [
        f"Machine {MID} (quiet-sun-1234) created in app web, region local",
        f"Machine {MID} is started",
        "  private IP: fdaa:0:1::5",
    ]


def test_run_rm_entrypoint_and_restart(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", MACHINES, (200, machine(state="created")))
    result = roost(
        "machine", "run", "alpine", "-a", APP, "--rm", "--entrypoint", "/bin/sh -c", "--detach"
    )
    assert result.exit_code == 0, result.output
    config = api.to("POST", MACHINES)[0].body["config"]
    assert config["restart"] == {"policy": "no"}
    assert config["auto_destroy"] is True
    assert config["init"] == {"entrypoint": ["/bin/sh", "-c"]}
    assert api.to("GET", f"{MACHINE_PATH}/wait") == []


def test_run_restart_flag_wins_over_rm(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", MACHINES, (200, machine(state="created")))
    result = roost(
        "machine", "run", "alpine", "-a", APP, "--rm", "--restart", "on-fail", "--detach"
    )
    assert result.exit_code == 0, result.output
    assert api.to("POST", MACHINES)[0].body["config"]["restart"] == {"policy": "on-failure"}


def test_run_skip_start(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", MACHINES, (200, machine(state="created")))
    result = roost("machine", "run", "alpine", "-a", APP, "--skip-start")
    assert result.exit_code == 0, result.output
    assert api.to("POST", MACHINES)[0].body["skip_launch"] is True
    assert api.to("GET", f"{MACHINE_PATH}/wait") == []
    assert f"roost machine start {MID} -a web" in result.stdout


def test_run_in_a_missing_app_suggests_creating_it(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", MACHINES, (404, {"error": "app not found"}))
    result = roost("machine", "run", "alpine", "-a", APP)
    assert result.exit_code == 1
    assert result.stderr == "Error: app 'web' not found; create it with `roost apps create web`\n"


def test_run_reports_a_failed_start(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", MACHINES, (200, machine(state="created")))
    api.on("GET", f"{MACHINE_PATH}/wait", (200, {"ok": True, "state": "failed"}))
    failed = {
        "id": "01E",
        "type": "start",
        "status": "failed",
        "source": "flyd",
        "timestamp": 1,
        "message": "pulling nosuch:latest: not found",
    }
    api.on("GET", f"{MACHINE_PATH}/events", (200, [failed]))
    result = roost("machine", "run", "nosuch", "-a", APP)
    assert result.exit_code == 1
    assert f"Error: machine {MID} failed to start: pulling nosuch:latest: not found" in (
        result.stderr
    )


def test_run_of_a_command_that_already_exited(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", MACHINES, (200, machine(state="created")))
    api.on("GET", f"{MACHINE_PATH}/wait", (200, {"ok": True, "state": "destroyed"}))
    result = roost("machine", "run", "alpine", "-a", APP, "--rm", "--", "echo", "hi")
    assert result.exit_code == 0, result.output
    assert f"Machine {MID} is destroyed: its process has already exited" in result.stdout


@pytest.mark.parametrize(
    ("flag", "complaint"),
    [
        (["--port", "80/sctp"], "invalid protocol"),
        (["--env", "NOVALUE"], "expected KEY=VALUE"),
        (["--entrypoint", "sh -c 'x"], "cannot split"),
    ],
)
def test_run_rejects_bad_flags(
    roost: RunCLI, api: FakeAPI, flag: list[str], complaint: str
) -> None:
    result = roost("machine", "run", "alpine", "-a", APP, *flag)
    assert result.exit_code == 2
    assert complaint in result.stderr
    assert api.calls == []


def shell_api(api: FakeAPI) -> None:
    api.on("POST", MACHINES, (200, machine(state="created")))
    api.on("GET", f"{MACHINE_PATH}/wait", started())
    api.on("DELETE", MACHINE_PATH, (200, {"ok": True}))
    leased(api)


def test_run_shell_opens_a_console_then_destroys_the_machine(
    roost: RunCLI, api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roost.cli import console

    shell_api(api)
    opened: list[tuple[str, str]] = []

    def fake_console(session: object, app: str, machine_id: str) -> int:
        opened.append((app, machine_id))
        assert api.to("DELETE", MACHINE_PATH) == []
        return 3

    monkeypatch.setattr(console, "open_console", fake_console)
    result = roost("machine", "run", "--shell", "-a", APP)
    assert result.exit_code == 3, result.output
    assert opened == [(APP, MID)]
    config = api.to("POST", MACHINES)[0].body["config"]
    assert config["image"] == SHELL_IMAGE
    assert config["init"] == {"exec": ["/bin/sleep", "inf"]}
    assert config["auto_destroy"] is True and config["restart"] == {"policy": "no"}
    (destroy,) = api.to("DELETE", MACHINE_PATH)
    assert destroy.params["force"] == ["true"]
    assert destroy.headers["fly-machine-lease-nonce"] == NONCE
    assert f"Machine {MID} destroyed" in result.stderr


def test_run_shell_destroys_the_machine_when_the_console_fails(
    roost: RunCLI, api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import click

    from roost.cli import console

    shell_api(api)

    def refused(session: object, app: str, machine_id: str) -> int:
        raise click.ClickException("the console was refused: HTTP 403")

    monkeypatch.setattr(console, "open_console", refused)
    result = roost("machine", "run", "alpine", "--shell", "-a", APP, "--", "sleep", "600")
    assert result.exit_code == 1
    assert "the console was refused" in result.stderr
    assert api.to("POST", MACHINES)[0].body["config"]["init"] == {"cmd": ["sleep", "600"]}
    assert len(api.to("DELETE", MACHINE_PATH)) == 1


def test_run_needs_an_image_without_shell(roost: RunCLI, api: FakeAPI) -> None:
    result = roost("machine", "run", "-a", APP)
    assert result.exit_code == 2 and "Missing argument 'IMAGE'" in result.stderr
    detached = roost("machine", "run", "--shell", "--detach", "-a", APP)
    assert detached.exit_code == 2 and "--shell needs the machine started" in detached.stderr
    assert api.calls == []


def test_app_from_the_environment(
    roost: RunCLI, api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.on("GET", "/v1/apps/flyapp/machines", (200, []))
    api.on("GET", "/v1/apps/roostapp/machines", (200, []))
    monkeypatch.setenv("FLY_APP", "flyapp")
    assert roost("machine", "list").exit_code == 0
    monkeypatch.setenv("ROOST_APP", "roostapp")
    assert roost("machine", "list").exit_code == 0
    assert [c.path for c in api.calls] == [
        "/v1/apps/flyapp/machines",
        "/v1/apps/roostapp/machines",
    ]


def test_a_missing_app_is_a_clear_error(roost: RunCLI, api: FakeAPI) -> None:
    result = roost("machine", "list")
    assert result.exit_code == 1
    assert result.stderr == "Error: no app given: pass -a/--app or set ROOST_APP\n"
    assert api.calls == []


# -- update -----------------------------------------------------------------------------


def update_api(api: FakeAPI) -> None:
    api.on("GET", MACHINE_PATH, (200, machine(version="01V1")))
    api.on("POST", MACHINE_PATH, (200, machine(version="01V2")))
    api.on("GET", f"{MACHINE_PATH}/wait", started("01V2"))
    leased(api)


def test_update_shows_a_diff_and_sends_current_version(roost: RunCLI, api: FakeAPI) -> None:
    update_api(api)
    result = roost(
        "machine",
        "update",
        MID,
        "-a",
        APP,
        "--image",
        "nginx:1.27",
        "--vm-memory",
        "512",
        "-e",
        "B=2",
        "--yes",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"Configuration changes to be applied to machine {MID} (quiet-sun-1234):",
        '  + env.B: "2"',
        "  - guest.memory_mb: 256",
        "  + guest.memory_mb: 512",
        '  - image: "alpine:3.20"',
        '  + image: "nginx:1.27"',
        f"Machine {MID} updated to version 01V2",
        f"Machine {MID} is started",
    ]
    (lease_call,) = api.to("POST", f"{MACHINE_PATH}/lease")
    assert lease_call.body == {"ttl": 120}
    (update_call,) = api.to("POST", MACHINE_PATH)
    assert update_call.headers["fly-machine-lease-nonce"] == NONCE
    assert update_call.body["current_version"] == "01V1"
    expected = machine()["config"]
    expected.update(image="nginx:1.27", env={"A": "1", "B": "2"})
    expected["guest"]["memory_mb"] = 512
    assert update_call.body["config"] == expected
    (release,) = api.to("DELETE", f"{MACHINE_PATH}/lease")
    assert release.headers["fly-machine-lease-nonce"] == NONCE
    (wait,) = api.to("GET", f"{MACHINE_PATH}/wait")
    assert wait.params["version"] == ["01V2"]
    assert wait.params["state"] == ["started", "failed"]


def test_update_command_replaces_cmd(roost: RunCLI, api: FakeAPI) -> None:
    update_api(api)
    result = roost("machine", "update", MID, "-a", APP, "--yes", "--detach", "--", "sleep", "1")
    assert result.exit_code == 0, result.output
    assert api.to("POST", MACHINE_PATH)[0].body["config"]["init"] == {"cmd": ["sleep", "1"]}
    assert api.to("GET", f"{MACHINE_PATH}/wait") == []


def test_update_asks_first(roost: RunCLI, api: FakeAPI) -> None:
    update_api(api)
    result = roost(
        "machine", "update", MID, "-a", APP, "--image", "nginx", interactive=True, input="n\n"
    )
    assert result.exit_code == 0, result.output
    assert "Apply changes? [y/N]" in result.stderr
    assert api.to("POST", MACHINE_PATH) == []
    assert api.to("POST", f"{MACHINE_PATH}/lease") == []

    result = roost(
        "machine", "update", MID, "-a", APP, "--image", "nginx", interactive=True, input="y\n"
    )
    assert result.exit_code == 0, result.output
    assert len(api.to("POST", MACHINE_PATH)) == 1


def test_update_needs_yes_without_a_terminal(roost: RunCLI, api: FakeAPI) -> None:
    update_api(api)
    result = roost("machine", "update", MID, "-a", APP, "--image", "nginx")
    assert result.exit_code == 1
    assert "Pass --yes" in result.stderr
    assert api.to("POST", MACHINE_PATH) == []


def test_update_without_changes(roost: RunCLI, api: FakeAPI) -> None:
    update_api(api)
    result = roost("machine", "update", MID, "-a", APP, "--image", "alpine:3.20", "--yes")
    assert result.exit_code == 0, result.output
    assert "No config changes found" in result.stderr
    assert api.to("POST", MACHINE_PATH) == []


def test_update_version_conflict(roost: RunCLI, api: FakeAPI) -> None:
    update_api(api)
    message = f"machine {MID} is at version 01V3, not 01V1; fetch it again and retry the update"
    api.on("POST", MACHINE_PATH, (409, {"error": message}))
    result = roost("machine", "update", MID, "-a", APP, "--image", "nginx", "--yes")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message}\n"
    assert len(api.to("DELETE", f"{MACHINE_PATH}/lease")) == 1


# -- lifecycle --------------------------------------------------------------------------


def test_stop_with_signal_and_timeout(roost: RunCLI, api: FakeAPI) -> None:
    leased(api)
    api.on("POST", f"{MACHINE_PATH}/stop", (200, {"ok": True}))
    api.on("GET", f"{MACHINE_PATH}/wait", (200, {"ok": True, "state": "stopped"}))
    result = roost("machine", "stop", MID, "-a", APP, "--signal", "SIGTERM", "--timeout", "10s")
    assert result.exit_code == 0, result.output
    (stop,) = api.to("POST", f"{MACHINE_PATH}/stop")
    assert stop.body == {"signal": "SIGTERM", "timeout": "10s"}
    assert stop.headers["fly-machine-lease-nonce"] == NONCE
    (wait,) = api.to("GET", f"{MACHINE_PATH}/wait")
    assert wait.params["state"] == list(STOPPED_STATES)
    assert result.stdout == f"Machine {MID} is stopped\n"
    assert [c.method for c in api.calls] == ["POST", "POST", "DELETE", "GET"]


def test_lease_held_by_someone_else(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", f"{MACHINE_PATH}/lease", (409, {"error": LEASE_HELD}))
    result = roost("machine", "stop", MID, "-a", APP)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {LEASE_HELD}\n"
    assert api.to("POST", f"{MACHINE_PATH}/stop") == []


def test_start_several(roost: RunCLI, api: FakeAPI) -> None:
    other = "0a0b0c0d0e0f10"
    for machine_id, previous in ((MID, "stopped"), (other, "failed")):
        path = f"{MACHINES}/{machine_id}"
        leased(api, machine_id)
        api.on("POST", f"{path}/start", (200, {"previous_state": previous, "migrated": False}))
        api.on("GET", f"{path}/wait", started())
    result = roost("machine", "start", MID, other, "-a", APP)
    assert result.exit_code == 0, result.output
    assert api.to("POST", f"{MACHINE_PATH}/start")[0].headers["fly-machine-lease-nonce"] == NONCE
    # Waiting for "failed" on a machine that was failed would return at once.
    assert api.to("GET", f"{MACHINE_PATH}/wait")[0].params["state"] == ["started", "failed"]
    assert api.to("GET", f"{MACHINES}/{other}/wait")[0].params["state"] == ["started"]
    assert result.stdout.splitlines() == [
        f"Machine {MID} is started",
        f"Machine {other} is started",
    ]


def test_restart_waits_for_the_new_start(roost: RunCLI, api: FakeAPI) -> None:
    leased(api)
    old = {"id": "01A", "type": "start", "status": "started", "source": "user", "timestamp": 1}
    new = {"id": "01C", "type": "start", "status": "started", "source": "user", "timestamp": 3}
    api.on("GET", f"{MACHINE_PATH}/events", (200, [old]), (200, [new, old]))
    api.on("POST", f"{MACHINE_PATH}/restart", (200, {"ok": True}))
    result = roost("machine", "restart", MID, "-a", APP, "--signal", "SIGHUP", "--timeout", "5s")
    assert result.exit_code == 0, result.output
    (restart,) = api.to("POST", f"{MACHINE_PATH}/restart")
    assert restart.params == {"signal": ["SIGHUP"], "timeout": ["5s"]}
    assert restart.headers["fly-machine-lease-nonce"] == NONCE
    assert result.stdout == f"Machine {MID} is started\n"


def test_destroy_force_and_a_lease_gone_with_the_machine(roost: RunCLI, api: FakeAPI) -> None:
    leased(api)
    api.on("DELETE", f"{MACHINE_PATH}/lease", (404, {"error": "machine not found"}))
    api.on("DELETE", MACHINE_PATH, (200, {"ok": True}))
    result = roost("machine", "destroy", MID, "-a", APP, "--force")
    assert result.exit_code == 0, result.output
    (destroy,) = api.to("DELETE", MACHINE_PATH)
    assert destroy.params == {"force": ["true"]}
    assert destroy.headers["fly-machine-lease-nonce"] == NONCE
    assert result.stdout == f"Machine {MID} destroyed\n"


def test_destroy_running_without_force(roost: RunCLI, api: FakeAPI) -> None:
    leased(api)
    message = f"failed_precondition: machine {MID} is started; stop it first"
    api.on("DELETE", MACHINE_PATH, (412, {"error": message}))
    result = roost("machine", "destroy", MID, "-a", APP)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message} (--force does that)\n"
    assert len(api.to("DELETE", f"{MACHINE_PATH}/lease")) == 1


def test_clone_pins_the_image(roost: RunCLI, api: FakeAPI) -> None:
    clone_id = "1111aaaa2222bb"
    api.on("GET", MACHINE_PATH, (200, machine(region="ams")))
    api.on("POST", MACHINES, (200, machine(id=clone_id, name="copy", version="01V9")))
    api.on("GET", f"{MACHINES}/{clone_id}/wait", started("01V9"))
    result = roost("machine", "clone", MID, "-a", APP, "--name", "copy")
    assert result.exit_code == 0, result.output
    (create,) = api.to("POST", MACHINES)
    assert create.body["region"] == "ams"
    assert create.body["name"] == "copy"
    assert create.body["config"] == {
        **machine()["config"],
        "image": f"docker.io/library/alpine:3.20@sha256:{'a' * 64}",
    }
    assert api.to("GET", f"{MACHINES}/{clone_id}/wait")[0].params["version"] == ["01V9"]
    assert f"Machine {clone_id} is started" in result.stdout


def test_clone_as_a_standby_stays_stopped(roost: RunCLI, api: FakeAPI) -> None:
    clone_id = "1111aaaa2222bb"
    api.on("GET", MACHINE_PATH, (200, machine(region="ams")))
    api.on("POST", MACHINES, (200, machine(id=clone_id, region="fra")))
    result = roost(
        "machine", "clone", MID, "-a", APP, "--region", "fra", "--standby-for", "source",
        "--image", "registry.example/recovery:1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (create,) = api.to("POST", MACHINES)
    assert create.body["skip_launch"] is True
    assert create.body["region"] == "fra"
    assert create.body["config"]["standbys"] == [MID]
    assert create.body["config"]["env"]["FLY_STANDBY_FOR"] == MID
    assert create.body["config"]["image"] == "registry.example/recovery:1"
    assert api.to("GET", f"{MACHINES}/{clone_id}/wait") == []
    assert f"is a standby for {MID}" in result.stdout


@pytest.mark.parametrize(("given", "sent"), [("usr1", "SIGUSR1"), ("SIGHUP", "SIGHUP"), ("9", 9)])
def test_signal(roost: RunCLI, api: FakeAPI, given: str, sent: object) -> None:
    api.on("POST", f"{MACHINE_PATH}/signal", (200, {"ok": True}))
    result = roost("machine", "signal", MID, given, "-a", APP)
    assert result.exit_code == 0, result.output
    assert api.calls[0].body == {"signal": sent}
    assert api.to("POST", f"{MACHINE_PATH}/lease") == []


# -- reading ----------------------------------------------------------------------------


def test_list_table(roost: RunCLI, api: FakeAPI) -> None:
    checks = [{"name": "servicecheck-00-http-8080", "status": "passing"}]
    api.on("GET", MACHINES, (200, [machine(checks=checks)]))
    result = roost("machine", "list", "-a", APP)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATE", "REGION", "IMAGE", "IP", "CHECKS", "CREATED"]
    assert row.split()[:7] == [
        MID,
        "quiet-sun-1234",
        "started",
        "local",
        "alpine:3.20",
        "fdaa:0:1::5",
        "1/1",
    ]
    assert row.endswith("ago")


def test_list_quiet_prints_ids_oldest_first(roost: RunCLI, api: FakeAPI) -> None:
    newer = machine(id="bbbbbbbbbbbbbb", created_at="2024-05-02T00:00:00Z")
    older = machine(id="aaaaaaaaaaaaaa", created_at="2024-05-01T00:00:00Z")
    api.on("GET", MACHINES, (200, [newer, older]))
    result = roost("machine", "list", "-a", APP, "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["aaaaaaaaaaaaaa", "bbbbbbbbbbbbbb"]


def test_list_empty(roost: RunCLI, api: FakeAPI) -> None:
    api.on("GET", MACHINES, (200, []))
    result = roost("machine", "list", "-a", APP)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "No machines in app web." in result.stderr


@pytest.mark.parametrize(
    ("args", "path", "body"),
    [
        (["list"], MACHINES, [machine()]),
        (["status", MID], MACHINE_PATH, machine()),
        (["events", MID], f"{MACHINE_PATH}/events", [{"id": "01A", "type": "start"}]),
    ],
)
def test_json_output_is_the_api_body(
    roost: RunCLI, api: FakeAPI, args: list[str], path: str, body: object
) -> None:
    api.on("GET", path, (200, body))
    result = roost("machine", *args, "-a", APP, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == body


def test_status(roost: RunCLI, api: FakeAPI) -> None:
    events = [
        {
            "id": "01C",
            "type": "exit",
            "status": "stopped",
            "source": "flyd",
            "timestamp": 1714564805000,
            "request": {"exit_event": {"exit_code": 137, "signal": 9, "oom_killed": True}},
        },
        {
            "id": "01B",
            "type": "start",
            "status": "started",
            "source": "user",
            "timestamp": 1714564801000,
        },
    ]
    checks = [{"name": "servicecheck-00-http-8080", "status": "critical", "output": "refused"}]
    api.on("GET", MACHINE_PATH, (200, machine(events=events, checks=checks, cordoned=True)))
    result = roost("machine", "status", MID, "-a", APP)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Machine ID:  {MID}" in out
    assert "Image:       alpine:3.20" in out
    assert "Guest:       shared, 1 CPU, 256 MB" in out
    assert "Command:     sleep inf" in out
    assert "Restart:     always" in out
    assert "Created:     2024-05-01 12:00:00 UTC (" in out
    assert "Cordoned:" in out
    assert "servicecheck-00-http-8080  critical" in out
    lines = out.splitlines()
    start = lines.index("Recent events")
    assert lines[start + 1].split() == ["STATE", "EVENT", "SOURCE", "TIMESTAMP", "INFO"]
    assert lines[start + 2].split() == [
        "stopped",
        "exit",
        "flyd",
        "2024-05-01",
        "12:00:05",
        "UTC",
        "exit_code=137",
        "signal=9",
        "oom_killed",
    ]


def test_events_table(roost: RunCLI, api: FakeAPI) -> None:
    failed = {
        "id": "01E",
        "type": "start",
        "status": "failed",
        "source": "flyd",
        "timestamp": 1714564800000,
        "message": "no such image",
    }
    api.on("GET", f"{MACHINE_PATH}/events", (200, [failed]))
    result = roost("machine", "events", MID, "-a", APP, "--limit", "5")
    assert result.exit_code == 0, result.output
    assert api.calls[0].params == {"limit": ["5"]}
    assert result.stdout.splitlines()[1].endswith("no such image")


def test_unknown_machine(roost: RunCLI, api: FakeAPI) -> None:
    api.on("GET", MACHINE_PATH, (404, {"error": "machine not found"}))
    result = roost("machine", "status", MID, "-a", APP)
    assert result.exit_code == 1
    assert result.stderr == "Error: machine not found\n"


def test_run_mounts_a_volume(roost: RunCLI, api: FakeAPI) -> None:
    api.on("POST", MACHINES, (200, machine(state="created", version="01V1")))
    api.on("GET", f"{MACHINE_PATH}/wait", started())
    result = roost("machine", "run", "alpine:3.20", "-a", APP, "-v", "vol_abc123:/data")
    assert result.exit_code == 0, result.output
    (create,) = api.to("POST", MACHINES)
    assert create.body["config"]["mounts"] == [{"volume": "vol_abc123", "path": "/data"}]


def test_run_rejects_a_malformed_volume(roost: RunCLI, api: FakeAPI) -> None:
    result = roost("machine", "run", "alpine:3.20", "-a", APP, "-v", "vol_abc123")
    assert result.exit_code == 2
    assert "VOLUME_ID:/absolute/path" in result.stderr
    assert api.calls == []
