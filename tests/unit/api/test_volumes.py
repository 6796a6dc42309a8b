"""The Volumes API: shapes, validation, placement, and the attach rules machines obey."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from roost.store.records import (
    Allocation,
    HostRecord,
    SnapshotRecord,
    VolumeRecord,
    alive_key,
    host_key,
    hostalloc_key,
    snapshot_key,
    volume_key,
)
from tests.unit.api.conftest import Api, add_host
from tests.unit.api.test_api import IMAGE, make_app

GIB = 1 << 30


async def make_volume(api: Api, app: str = "web", **body: Any) -> dict[str, Any]:
    r = await api.client.post(f"/v1/apps/{app}/volumes", json={"name": "data", **body})
    assert r.status_code == 200, r.text
    return r.json()


async def make_machine(api: Api, volume_id: str, app: str = "web", **extra: Any) -> Any:
    config = {"image": IMAGE, "mounts": [{"volume": volume_id, "path": "/data"}]}
    return await api.client.post(f"/v1/apps/{app}/machines", json={"config": config, **extra})


async def stored(api: Api, app: str, volume_id: str) -> VolumeRecord:
    kv = await api.store.get(volume_key(app, volume_id))
    assert kv is not None
    return VolumeRecord.from_json(kv.value)


async def reserved_disk(api: Api, host: str = "h1") -> int:
    kv = await api.store.get(hostalloc_key(host))
    return Allocation.from_json(kv.value).disk_gb if kv else 0


async def set_host(api: Api, host_id: str, **changes: Any) -> None:
    kv = await api.store.get(host_key(host_id))
    assert kv is not None
    host = HostRecord.from_json(kv.value)
    for key, value in changes.items():
        setattr(host, key, value)
    await api.store.put(host_key(host_id), host.to_json())


async def set_volume(api: Api, app: str, volume_id: str, **changes: Any) -> None:
    """Play the agent: move a volume on."""
    volume = await stored(api, app, volume_id)
    for key, value in changes.items():
        setattr(volume, key, value)
    await api.store.put(volume_key(app, volume_id), volume.to_json())


# -- create ------------------------------------------------------------------------------------


async def test_create_shape_and_disk_reservation(api: Api) -> None:
    await make_app(api)
    volume = await make_volume(api, region="test", size_gb=4, encrypted=True, fstype="ext4")
    assert re.fullmatch(r"vol_[a-z0-9]{16}", volume["id"])
    assert {k: volume[k] for k in ("name", "state", "size_gb", "region", "zone")} == {
        "name": "data",
        "state": "creating",
        "size_gb": 4,
        "region": "test",
        "zone": "h1",
    }
    assert volume["encrypted"] is False, "never encrypted, whatever was asked"
    assert volume["attached_machine_id"] is None and volume["attached_alloc_id"] is None
    assert (volume["fstype"], volume["type"], volume["host_status"]) == ("ext4", "local", "ok")
    assert (volume["snapshot_retention"], volume["auto_backup_enabled"]) == (5, False)
    assert volume["created_at"] == "2027-01-15T08:00:00.000Z"
    assert volume["bytes_total"] == 0 and volume["blocks"] == 0
    assert await reserved_disk(api) == 4
    assert (await api.client.get(f"/v1/apps/web/volumes/{volume['id']}")).json() == volume
    assert (await api.client.get("/v1/apps/web")).json()["volume_count"] == 1


async def test_create_defaults_to_3_gb_in_the_apis_region(api: Api) -> None:
    await make_app(api)
    volume = await make_volume(api)
    assert (volume["size_gb"], volume["region"]) == (3, "test")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "Data"}, "invalid volume name 'Data'"),
        ({"name": "my-data"}, "invalid volume name"),
        ({"name": "x" * 31}, "up to 30 lowercase letters"),
        ({"name": "data", "fstype": "xfs"}, "invalid fstype 'xfs'"),
        ({"name": "data", "size_gb": 0}, "size_gb"),
        ({"name": "data", "size_gb": 501}, "size_gb"),
        ({"name": "data", "snapshot_retention": 61}, "snapshot_retention"),
        ({"name": "data", "region": "any"}, "a volume lives in one region"),
        ({"name": "data", "region": "ams,fra"}, "invalid region"),
        (
            {"name": "data", "snapshot_id": "vs_x", "source_volume_id": "vol_y"},
            "not both",
        ),
        ({}, "name"),
    ],
)
async def test_bad_create_requests_say_what_is_wrong(
    api: Api, body: dict[str, Any], message: str
) -> None:
    await make_app(api)
    r = await api.client.post("/v1/apps/web/volumes", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert await reserved_disk(api) == 0


async def test_unknown_app_and_volume(api: Api) -> None:
    r = await api.client.post("/v1/apps/nope/volumes", json={"name": "data"})
    assert (r.status_code, r.json()) == (404, {"error": "app not found"})
    await make_app(api)
    for vid in ("vol_0000000000000000", "vol_..", "vol_X", "vol_0000000000000000x"):
        r = await api.client.get(f"/v1/apps/web/volumes/{vid}")
        assert (r.status_code, r.json()) == (404, {"error": "volume not found"}), vid
    r = await api.client.get("/v1/apps/nope/volumes/vol_0000000000000000")
    assert r.json() == {"error": "app not found"}


async def test_no_room_is_insufficient_capacity_naming_the_region(api: Api) -> None:
    await make_app(api)
    r = await api.client.post("/v1/apps/web/volumes", json={"name": "data", "size_gb": 101})
    assert r.status_code == 412
    assert r.json()["status"] == "insufficient_capacity"
    assert "no live host in region test has 101 GB free" in r.json()["error"]
    # One region takes Fly's codes; a name Fly does not know is refused.
    r = await api.client.post("/v1/apps/web/volumes", json={"name": "data", "region": "syd"})
    assert r.status_code == 200 and r.json()["region"] == "test"
    r = await api.client.post("/v1/apps/web/volumes", json={"name": "data", "region": "xyz"})
    assert r.status_code == 412 and "regions that keep volumes: test" in r.json()["error"]
    await set_host(api, "h1", cordoned=True)
    r = await api.client.post("/v1/apps/web/volumes", json={"name": "data"})
    assert r.status_code == 412, "a cordoned host takes no volumes"


async def test_same_named_volumes_spread_over_hosts(api: Api) -> None:
    await add_host(api.store, "h2", "test", disk_gb=10)
    await make_app(api)
    zones = {(await make_volume(api, size_gb=1))["zone"] for _ in range(2)}
    assert zones == {"h1", "h2"}
    # A new name goes to the host with the most free disk.
    assert (await make_volume(api, name="other", size_gb=1))["zone"] == "h1"


async def test_list_with_pagination_and_summary(api: Api) -> None:
    await make_app(api)
    ids = sorted([(await make_volume(api, size_gb=1))["id"] for _ in range(3)])
    listed = (await api.client.get("/v1/apps/web/volumes")).json()
    assert [v["id"] for v in listed] == ids
    r = await api.client.get("/v1/apps/web/volumes", params={"limit": 2})
    assert [v["id"] for v in r.json()] == ids[:2]
    assert r.headers["fly-next-cursor"] == ids[1]
    r = await api.client.get("/v1/apps/web/volumes", params={"limit": 2, "cursor": ids[1]})
    assert [v["id"] for v in r.json()] == ids[2:] and "fly-next-cursor" not in r.headers
    summary = (await api.client.get("/v1/apps/web/volumes", params={"summary": "true"})).json()
    assert "blocks" not in summary[0] and summary[0]["id"] == ids[0]


async def test_a_volume_on_a_lost_host_shows_unreachable(api: Api) -> None:
    await make_app(api)
    volume = await make_volume(api)
    await api.store.delete(alive_key("h1"))
    shown = (await api.client.get(f"/v1/apps/web/volumes/{volume['id']}")).json()
    assert shown["host_status"] == "unreachable"


async def test_update_changes_the_snapshot_retention(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api))["id"]
    r = await api.client.put(
        f"/v1/apps/web/volumes/{vid}",
        json={"snapshot_retention": 30, "auto_backup_enabled": True},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["snapshot_retention"], r.json()["auto_backup_enabled"]) == (30, False)
    r = await api.client.put(f"/v1/apps/web/volumes/{vid}", json={"snapshot_retention": 0})
    assert r.status_code == 400 and "snapshot_retention" in r.json()["error"]


# -- extend ----------------------------------------------------------------------------------


async def test_extend_only_grows_and_reserves_the_difference(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api, size_gb=10))["id"]
    # Right after its create, a volume is still being made: the extend waits for it.
    early = asyncio.create_task(
        api.client.put(f"/v1/apps/web/volumes/{vid}/extend", json={"size_gb": 12})
    )
    await asyncio.sleep(0.05)
    assert not early.done()
    await set_volume(api, "web", vid, state="created")
    r = await early
    assert r.status_code == 200 and r.json()["volume"]["size_gb"] == 12
    await set_volume(api, "web", vid, state="created")
    r = await api.client.put(f"/v1/apps/web/volumes/{vid}/extend", json={"size_gb": 10})
    assert r.status_code == 400 and "volumes only grow" in r.json()["error"]
    r = await api.client.put(f"/v1/apps/web/volumes/{vid}/extend", json={"size_gb": 111})
    assert r.status_code == 412 and r.json()["status"] == "insufficient_capacity"
    assert "has 88 GB free, not 99" in r.json()["error"]
    r = await api.client.put(f"/v1/apps/web/volumes/{vid}/extend", json={"size_gb": 20})
    assert r.status_code == 200, r.text
    assert r.json()["needs_restart"] is False
    assert (r.json()["volume"]["size_gb"], r.json()["volume"]["state"]) == (20, "extending")
    assert await reserved_disk(api) == 20
    r = await api.client.put(f"/v1/apps/web/volumes/{vid}/extend", json={"size_gb": 25})
    assert r.status_code == 200, "a bigger extend while extending is fine"
    assert await reserved_disk(api) == 25


async def test_extend_needs_a_restart_where_mounted_filesystems_cannot_grow(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api, size_gb=1))["id"]
    await set_volume(api, "web", vid, state="created")
    assert (await make_machine(api, vid)).status_code == 200
    r = await api.client.put(f"/v1/apps/web/volumes/{vid}/extend", json={"size_gb": 2})
    assert r.json()["needs_restart"] is True
    await set_host(api, "h1", online_resize=True)
    await set_volume(api, "web", vid, state="created")
    r = await api.client.put(f"/v1/apps/web/volumes/{vid}/extend", json={"size_gb": 3})
    assert r.json()["needs_restart"] is False


# -- destroy -----------------------------------------------------------------------------------


async def test_destroy_waits_for_the_machine_to_go(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api))["id"]
    machine = (await make_machine(api, vid)).json()
    r = await api.client.delete(f"/v1/apps/web/volumes/{vid}")
    assert r.status_code == 412
    assert f"attached to machine {machine['id']}; destroy the machine first" in r.json()["error"]
    r = await api.client.delete(f"/v1/apps/web/machines/{machine['id']}", params={"force": True})
    assert r.status_code == 200
    r = await api.client.delete(f"/v1/apps/web/volumes/{vid}")
    assert r.status_code == 200 and r.json()["state"] == "destroying"
    again = await api.client.delete(f"/v1/apps/web/volumes/{vid}")
    assert again.status_code == 200 and again.json()["state"] == "destroying"
    # The disk stays reserved until the host has removed the image.
    assert await reserved_disk(api) == 3
    assert (await api.client.get("/v1/apps/web")).json()["volume_count"] == 0


async def test_deleting_an_app_destroys_its_volumes(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api))["id"]
    assert (await make_machine(api, vid)).status_code == 200
    r = await api.client.delete("/v1/apps/web", params={"force": True})
    assert r.status_code == 202
    volume = await stored(api, "web", vid)
    assert volume.state == "destroying" and volume.attached_machine_id is not None


# -- machines with volumes ---------------------------------------------------------------------


async def test_a_machine_runs_on_its_volumes_host_and_holds_it(api: Api) -> None:
    await add_host(api.store, "h2", "test", memory_mb=65536, disk_gb=0)
    await make_app(api)
    vid = (await make_volume(api))["id"]
    r = await make_machine(api, vid)
    assert r.status_code == 200, r.text
    machine = r.json()
    placed = await api.store.get(f"/machines/web/{machine['id']}")
    assert placed is not None and '"host_id":"h1"' in placed.value, "h2 has more memory"
    assert (await stored(api, "web", vid)).attached_machine_id == machine["id"]
    assert machine["config"]["mounts"] == [{"volume": vid, "path": "/data"}]

    r = await make_machine(api, vid)
    assert r.status_code == 412
    assert f"volume {vid} is attached to machine {machine['id']}" in r.json()["error"]


async def test_two_machines_racing_for_one_volume_one_wins(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api))["id"]
    answers = await asyncio.gather(*(make_machine(api, vid) for _ in range(4)))
    assert sorted(r.status_code for r in answers) == [200, 412, 412, 412]
    winner = next(r.json()["id"] for r in answers if r.status_code == 200)
    assert (await stored(api, "web", vid)).attached_machine_id == winner


@pytest.mark.parametrize(
    ("mounts", "status", "message"),
    [
        ([{"path": "/data"}], 400, "config.mounts[0].volume is required"),
        ([{"volume": "vol_nope", "path": "/data"}], 400, "is not a volume id"),
        ([{"volume": "vol_0000000000000000", "path": "/data"}], 400, "is not in app 'web'"),
        ([{"volume": "VOL", "path": "/"}], 400, "config.mounts.0.path"),
        ([{"volume": "VOL", "path": "data"}], 400, "absolute path"),
        ([{"volume": "VOL", "path": "/a/../b"}], 400, "without '..'"),
        (
            [{"volume": "VOL", "path": "/a"}, {"volume": "VOL", "path": "/b"}],
            400,
            "at most one volume",
        ),
    ],
)
async def test_bad_mounts_say_what_is_wrong(
    api: Api, mounts: list[dict[str, str]], status: int, message: str
) -> None:
    await make_app(api)
    vid = (await make_volume(api))["id"]
    mounts = [{k: v.replace("VOL", vid) for k, v in m.items()} for m in mounts]
    config = {"image": IMAGE, "mounts": mounts}
    r = await api.client.post("/v1/apps/web/machines", json={"config": config})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


async def test_a_volume_of_another_app_cannot_be_mounted(api: Api) -> None:
    await make_app(api)
    await make_app(api, "other")
    vid = (await make_volume(api, "other"))["id"]
    r = await make_machine(api, vid)
    assert r.status_code == 400 and "mounts only its own app's volumes" in r.json()["error"]


async def test_the_volumes_host_must_have_room(api: Api) -> None:
    await add_host(api.store, "h2", "test", disk_gb=0)
    await make_app(api)
    vid = (await make_volume(api))["id"]
    r = await make_machine(api, vid, region="other")
    assert r.status_code == 400 and "volume is in region test, not in other" in r.json()["error"]
    big = {"image": IMAGE, "guest": {"cpus": 1, "memory_mb": 8192}}
    big["mounts"] = [{"volume": vid, "path": "/data"}]
    r = await api.client.post("/v1/apps/web/machines", json={"config": big})
    assert r.status_code == 412 and r.json()["status"] == "volume_placement_capacity"
    assert r.json()["error"].startswith(
        "insufficient resources to create new machine with existing volume"
    )
    assert f"roost volumes fork {vid}" in r.json()["error"]
    await api.store.delete(alive_key("h1"))
    r = await make_machine(api, vid)
    assert r.status_code == 412 and "which is down" in r.json()["error"]


async def test_a_destroying_volume_cannot_be_mounted(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api))["id"]
    await api.client.delete(f"/v1/apps/web/volumes/{vid}")
    r = await make_machine(api, vid)
    assert r.status_code == 412 and "is destroying and cannot be mounted" in r.json()["error"]


async def test_an_update_keeps_the_volume(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api))["id"]
    other = (await make_volume(api))["id"]
    mid = (await make_machine(api, vid)).json()["id"]
    for mounts in ([], [{"volume": other, "path": "/data"}]):
        config = {"image": IMAGE, "mounts": mounts}
        r = await api.client.post(f"/v1/apps/web/machines/{mid}", json={"config": config})
        assert r.status_code == 400 and "cannot be added, removed or swapped" in r.json()["error"]
    config = {"image": IMAGE, "env": {"A": "1"}, "mounts": [{"volume": vid, "path": "/srv"}]}
    r = await api.client.post(f"/v1/apps/web/machines/{mid}", json={"config": config})
    assert r.status_code == 200, r.text


# -- snapshots -----------------------------------------------------------------------------------


async def test_snapshots_are_asked_for_and_listed(api: Api) -> None:
    await make_app(api)
    vid = (await make_volume(api, size_gb=2, snapshot_retention=9))["id"]
    assert (await api.client.get(f"/v1/apps/web/volumes/{vid}/snapshots")).json() == []
    r = await api.client.post(f"/v1/apps/web/volumes/{vid}/snapshots")
    assert r.status_code == 200, r.text
    snapshot = r.json()
    assert re.fullmatch(r"vs_[a-z0-9]{16}", snapshot["id"])
    assert snapshot == {
        "id": snapshot["id"],
        "size": 0,
        "volume_size": 2 * GIB,
        "digest": "",
        "created_at": "2027-01-15T08:00:00.000Z",
        "status": "pending",
        "retention_days": 9,
    }
    kv = await api.store.get(snapshot_key(vid, snapshot["id"]))
    assert kv is not None and SnapshotRecord.from_json(kv.value).host_id == "h1"
    listed = (await api.client.get(f"/v1/apps/web/volumes/{vid}/snapshots")).json()
    assert listed == [snapshot]

    await api.client.delete(f"/v1/apps/web/volumes/{vid}")
    r = await api.client.post(f"/v1/apps/web/volumes/{vid}/snapshots")
    assert r.status_code == 412 and "only a live volume" in r.json()["error"]
    # Snapshots outlive their volume.
    await api.store.delete(volume_key("web", vid))
    listed = (await api.client.get(f"/v1/apps/web/volumes/{vid}/snapshots")).json()
    assert [s["id"] for s in listed] == [snapshot["id"]]
    r = await api.client.get("/v1/apps/web/volumes/vol_0000000000000000/snapshots")
    assert r.status_code == 404


async def test_restoring_a_snapshot_elsewhere(api: Api) -> None:
    await add_host(api.store, "h2", "fra")
    await make_app(api)
    vid = (await make_volume(api, size_gb=2))["id"]
    snapshot = (await api.client.post(f"/v1/apps/web/volumes/{vid}/snapshots")).json()
    restored = await make_volume(api, region="fra", snapshot_id=snapshot["id"])
    assert (restored["zone"], restored["size_gb"]) == ("h2", 2)
    assert (await stored(api, "web", restored["id"])).snapshot_id == snapshot["id"]
    bigger = await make_volume(api, region="fra", snapshot_id=snapshot["id"], size_gb=5)
    assert bigger["size_gb"] == 5
    r = await api.client.post(
        "/v1/apps/web/volumes",
        json={"name": "data", "snapshot_id": snapshot["id"], "size_gb": 1},
    )
    assert r.status_code == 400 and "smaller than the 2 GB being restored" in r.json()["error"]
    r = await api.client.post(
        "/v1/apps/web/volumes", json={"name": "data", "snapshot_id": "vs_0000000000000000"}
    )
    assert r.status_code == 404 and "snapshot vs_0000000000000000 not found" in r.json()["error"]
    await make_app(api, "other")
    r = await api.client.post(
        "/v1/apps/other/volumes", json={"name": "data", "snapshot_id": snapshot["id"]}
    )
    assert r.status_code == 404, "another app's snapshot is not there"

    key = snapshot_key(vid, snapshot["id"])
    failed = SnapshotRecord.from_json((await api.store.get(key)).value)  # type: ignore[union-attr]
    failed.status, failed.error = "failed", "disk full"
    await api.store.put(key, failed.to_json())
    r = await api.client.post(
        "/v1/apps/web/volumes", json={"name": "data", "snapshot_id": snapshot["id"]}
    )
    assert r.status_code == 412 and "failed (disk full)" in r.json()["error"]


async def test_a_fork_is_a_snapshot_restored(api: Api) -> None:
    await add_host(api.store, "h2", "fra")
    await make_app(api)
    source = await make_volume(api, name="pg", size_gb=2)
    fork = await make_volume(api, name="pg_copy", region="fra", source_volume_id=source["id"])
    assert (fork["zone"], fork["size_gb"]) == ("h2", 2)
    snapshot_id = (await stored(api, "web", fork["id"])).snapshot_id
    kv = await api.store.get(snapshot_key(source["id"], snapshot_id))
    assert kv is not None
    snapshot = SnapshotRecord.from_json(kv.value)
    assert (snapshot.status, snapshot.host_id) == ("pending", "h1")
    same_region = await make_volume(api, source_volume_id=source["id"])
    assert (same_region["region"], same_region["name"]) == ("test", "data")
    r = await api.client.post(
        "/v1/apps/web/volumes", json={"name": "x", "source_volume_id": "vol_0000000000000000"}
    )
    assert r.status_code == 404 and "source volume" in r.json()["error"]
