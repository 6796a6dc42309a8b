"""Volumes on a real server: loop-mounted ext4 images bound into runc machines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.platform import RoostServer
from tests.integration.platform.helpers import destroy, get, new_app, run, until, wait

pytestmark = pytest.mark.root

GIB = 1 << 30


@pytest.fixture(scope="module")
def c(roost: RoostServer) -> httpx.Client:
    return roost.client()


def sleeper(demo_images: dict[str, str], volume_id: str, **config: Any) -> dict[str, Any]:
    return {
        "image": demo_images["roost/busybox"],
        "init": {"exec": ["/bin/sleep", "inf"]},
        "mounts": [{"volume": volume_id, "path": "/data"}],
        **config,
    }


def new_volume(c: httpx.Client, app: str, **body: Any) -> dict[str, Any]:
    r = c.post(f"/v1/apps/{app}/volumes", json={"name": "data", "size_gb": 1, **body})
    assert r.status_code == 200, r.text
    return r.json()


def volume(c: httpx.Client, app: str, volume_id: str) -> dict[str, Any]:
    r = c.get(f"/v1/apps/{app}/volumes/{volume_id}")
    assert r.status_code == 200, r.text
    return r.json()


def volume_until(c: httpx.Client, app: str, volume_id: str, **wanted: Any) -> dict[str, Any]:
    """Volumes have no wait endpoint: poll the volume until it shows ``wanted``."""
    until(lambda: all(volume(c, app, volume_id).get(k) == v for k, v in wanted.items()))
    return volume(c, app, volume_id)


def sh(c: httpx.Client, app: str, machine_id: str, script: str) -> str:
    r = c.post(
        f"/v1/apps/{app}/machines/{machine_id}/exec",
        json={"command": ["/bin/sh", "-c", script], "timeout": 20},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["exit_code"] == 0, out
    return str(out["stdout"])


def data_kib(c: httpx.Client, app: str, machine_id: str) -> int:
    """Size of the filesystem at /data, as ``df`` inside the machine sees it."""
    line = sh(c, app, machine_id, "df -k /data | tail -1").split()
    return int(line[1])


def mounted(path: Path) -> bool:
    return any(
        line.split()[1] == str(path) for line in Path("/proc/self/mounts").read_text().splitlines()
    )


def test_a_volumes_data_survives_stop_start_and_update_and_it_grows(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "vol")
    made = new_volume(c, app)
    vid = made["id"]
    assert (made["state"], made["size_gb"], made["region"], made["fstype"]) == (
        "creating",
        1,
        "test",
        "ext4",
    )
    made = volume_until(c, app, vid, state="created")
    assert made["bytes_total"] > 0.9 * GIB and made["attached_machine_id"] is None

    machine = run(c, app, sleeper(demo_images, vid))
    mid = machine["id"]
    assert volume(c, app, vid)["attached_machine_id"] == mid
    sh(c, app, mid, "echo kept > /data/file && sync")

    # One machine per volume; and a volume in use is not destroyed.
    r = c.post(f"/v1/apps/{app}/machines", json={"config": sleeper(demo_images, vid)})
    assert r.status_code == 412 and f"attached to machine {mid}" in r.json()["error"]
    r = c.delete(f"/v1/apps/{app}/volumes/{vid}")
    assert r.status_code == 412 and "destroy the machine first" in r.json()["error"]

    c.post(f"/v1/apps/{app}/machines/{mid}/stop").raise_for_status()
    wait(c, app, mid, "stopped")
    c.post(f"/v1/apps/{app}/machines/{mid}/start").raise_for_status()
    wait(c, app, mid, "started")
    assert sh(c, app, mid, "cat /data/file") == "kept\n"

    r = c.post(
        f"/v1/apps/{app}/machines/{mid}",
        json={"config": sleeper(demo_images, vid, env={"AFTER": "update"})},
    )
    assert r.status_code == 200, r.text
    wait(c, app, mid, "started", version=r.json()["version"])
    assert sh(c, app, mid, "echo $AFTER; cat /data/file") == "update\nkept\n"

    before = data_kib(c, app, mid)
    r = c.put(f"/v1/apps/{app}/volumes/{vid}/extend", json={"size_gb": 2})
    assert r.status_code == 200, r.text
    assert r.json()["volume"]["size_gb"] == 2
    if r.json()["needs_restart"]:
        # This host cannot grow mounted filesystems: the machine's next start does.
        last_event = get(c, app, mid)["events"][0]["id"]
        c.post(f"/v1/apps/{app}/machines/{mid}/restart").raise_for_status()
        wait(c, app, mid, "started", from_event_id=last_event)
    grown = volume_until(c, app, vid, state="created")
    assert grown["bytes_total"] > 1.9 * GIB
    assert data_kib(c, app, mid) > 1.9 * before
    assert sh(c, app, mid, "cat /data/file") == "kept\n"

    destroy(c, app, mid)
    volume_until(c, app, vid, attached_machine_id=None)
    image = roost.data_dir / "volumes" / f"{vid}.img"
    assert image.exists() and mounted(roost.data_dir / "volumes/mnt" / vid)
    r = c.delete(f"/v1/apps/{app}/volumes/{vid}")
    assert r.status_code == 200 and r.json()["state"] == "destroying"
    until(lambda: c.get(f"/v1/apps/{app}/volumes/{vid}").status_code == 404)
    assert not image.exists() and not mounted(roost.data_dir / "volumes/mnt" / vid)


def test_a_snapshot_restores_into_a_new_volume(
    c: httpx.Client, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    app = new_app(c, "snap")
    vid = new_volume(c, app)["id"]
    writer = run(c, app, sleeper(demo_images, vid))
    sh(c, app, writer["id"], "echo before > /data/file && sync")

    # Taken while the machine runs: the filesystem is frozen for the copy.
    r = c.post(f"/v1/apps/{app}/volumes/{vid}/snapshots")
    assert r.status_code == 200, r.text
    snapshot_id = r.json()["id"]

    def taken() -> bool:
        listed = c.get(f"/v1/apps/{app}/volumes/{vid}/snapshots").json()
        return [(s["id"], s["status"]) for s in listed] == [(snapshot_id, "created")]

    until(taken)
    (snapshot,) = c.get(f"/v1/apps/{app}/volumes/{vid}/snapshots").json()
    assert snapshot["digest"].startswith("sha256:") and snapshot["volume_size"] == GIB
    sh(c, app, writer["id"], "echo after > /data/file && sync")

    restored = new_volume(c, app, snapshot_id=snapshot_id, size_gb=None)
    assert restored["size_gb"] == 1
    volume_until(c, app, restored["id"], state="created")
    reader = run(c, app, sleeper(demo_images, restored["id"]))
    assert sh(c, app, reader["id"], "cat /data/file") == "before\n"
    assert sh(c, app, writer["id"], "cat /data/file") == "after\n"

    # Deleting the app takes its machines and volumes with it.
    c.delete(f"/v1/apps/{app}", params={"force": "true"}).raise_for_status()
    images = [roost.data_dir / "volumes" / f"{v}.img" for v in (vid, restored["id"])]
    until(lambda: not any(image.exists() for image in images))
    assert not any(mounted(roost.data_dir / "volumes/mnt" / v) for v in (vid, restored["id"]))
