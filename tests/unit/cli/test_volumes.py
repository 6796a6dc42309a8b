"""``roost volumes`` against a fake API (invoked directly: the group is not in COMMANDS
until the lead registers it)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from roost.cli.client import ClientError
from roost.cli.session import Session
from roost.cli.volumes import volumes
from tests.unit.cli.fakes import APP, FakeAPI

VID = "vol_abcdefghij012345"
BASE = f"/v1/apps/{APP}/volumes"


def volume(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": VID,
        "name": "data",
        "state": "created",
        "size_gb": 3,
        "region": "ams",
        "zone": "h1",
        "encrypted": False,
        "attached_machine_id": None,
        "attached_alloc_id": None,
        "created_at": "2024-05-01T12:00:00.000Z",
        "host_status": "ok",
        "fstype": "ext4",
        "snapshot_retention": 5,
        "auto_backup_enabled": False,
        "type": "local",
        "block_size": 4096,
        "blocks": 786432,
        "blocks_free": 786000,
        "blocks_avail": 786000,
        "bytes_total": 3 * 2**30,
        "bytes_used": 432 * 4096,
    }
    out.update(overrides)
    return out


@pytest.fixture
def run(api: FakeAPI) -> Any:
    def invoke(*args: str, interactive: bool = False, input: str | None = None) -> Result:
        session = Session(
            token="t0k", transport=httpx.MockTransport(api.handle), interactive=interactive
        )
        return CliRunner().invoke(volumes, [*args, "-a", APP], obj=session, input=input)

    return invoke


def test_create_sends_only_what_was_given(run: Any, api: FakeAPI) -> None:
    api.on("POST", BASE, (200, volume(state="creating")))
    result = run("create", "data", "--region", "ams", "--size", "3")
    assert result.exit_code == 0, result.output
    assert api.calls[0].body == {"name": "data", "region": "ams", "size_gb": 3}
    assert f"ID:                  {VID}" in result.stdout
    assert "State:               creating" in result.stdout
    result = run("create", "data", "--snapshot-id", "vs_0123456789abcdef", "--json")
    assert api.calls[1].body == {"name": "data", "snapshot_id": "vs_0123456789abcdef"}
    assert json.loads(result.stdout)["id"] == VID


def test_list_table(run: Any, api: FakeAPI) -> None:
    api.on("GET", BASE, (200, [volume(attached_machine_id="3d8d9e1c5e6f78")]))
    result = run("list")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == [
        "ID", "STATE", "NAME", "SIZE", "REGION", "ZONE", "ATTACHED", "VM", "CREATED",
    ]  # fmt: skip
    assert row.split()[:7] == [VID, "created", "data", "3GB", "ams", "h1", "3d8d9e1c5e6f78"]
    api.on("GET", BASE, (200, []))
    assert "create one with `roost volumes create NAME`" in run("list").stderr


def test_show_has_the_usage(run: Any, api: FakeAPI) -> None:
    api.on("GET", f"{BASE}/{VID}", (200, volume(error="")))
    result = run("show", VID)
    assert result.exit_code == 0, result.output
    assert "Used:                1.7 MiB of 3.0 GiB" in result.stdout
    assert "Attached VM:         -" in result.stdout


def test_extend_says_when_a_restart_is_needed(run: Any, api: FakeAPI) -> None:
    grown = volume(size_gb=10, state="extending", attached_machine_id="3d8d9e1c5e6f78")
    api.on("PUT", f"{BASE}/{VID}/extend", (200, {"needs_restart": True, "volume": grown}))
    result = run("extend", VID, "--size", "10")
    assert result.exit_code == 0, result.output
    assert api.calls[0].body == {"size_gb": 10}
    assert result.stdout.splitlines() == [
        f"Volume {VID} is being extended to 10GB",
        "Its filesystem grows when machine 3d8d9e1c5e6f78 next starts: restart it with "
        f"`roost machine restart 3d8d9e1c5e6f78 -a {APP}`",
    ]


def test_destroy_asks_first(run: Any, api: FakeAPI) -> None:
    api.on("DELETE", f"{BASE}/{VID}", (200, volume(state="destroying")))
    refused = run("destroy", VID)
    assert refused.exit_code == 1 and "Pass --yes" in refused.output and not api.calls
    result = run("destroy", VID, interactive=True, input="y\n")
    assert result.exit_code == 0, result.output
    assert f"Destroyed volume {VID} (data)" in result.stdout


def test_api_errors_are_shown_as_they_are(run: Any, api: FakeAPI) -> None:
    message = f"failed_precondition: volume {VID} is attached to machine m1; destroy it first"
    api.on("DELETE", f"{BASE}/{VID}", (412, {"error": message}))
    result = run("destroy", VID, "--yes")
    # `roost` itself turns it into "Error: <message>" (RoostGroup.invoke).
    assert isinstance(result.exception, ClientError) and result.exception.message == message


def test_snapshots(run: Any, api: FakeAPI) -> None:
    snapshot = {
        "id": "vs_0123456789abcdef",
        "size": 5 * 2**20,
        "volume_size": 3 * 2**30,
        "digest": "sha256:00",
        "created_at": "2024-05-01T12:00:00.000Z",
        "status": "created",
        "retention_days": 5,
    }
    api.on("GET", f"{BASE}/{VID}/snapshots", (200, [snapshot]))
    result = run("snapshots", "list", VID)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[:4] == [snapshot["id"], "created", "5.0", "MiB"]
    api.on("POST", f"{BASE}/{VID}/snapshots", (200, {**snapshot, "status": "pending"}))
    result = run("snapshots", "create", VID)
    assert f"Scheduled snapshot {snapshot['id']} of volume {VID}" in result.stdout
    api.on("POST", f"{BASE}/{VID}/snapshots", (200, None))
    assert f"Scheduled snapshot of volume {VID}" in run("snapshots", "create", VID).stdout


def test_fork_keeps_the_name_unless_told(run: Any, api: FakeAPI) -> None:
    api.on("GET", f"{BASE}/{VID}", (200, volume()))
    api.on("POST", BASE, (200, volume(id="vol_0000000000000000", region="fra")))
    result = run("fork", VID, "--region", "fra")
    assert result.exit_code == 0, result.output
    assert api.to("POST", BASE)[0].body == {
        "name": "data",
        "source_volume_id": VID,
        "region": "fra",
    }
