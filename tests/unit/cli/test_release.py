"""The release plan: which machines a deploy creates, updates and removes, and how."""

from __future__ import annotations

from typing import Any

import pytest

from roost.appconfig import GroupConfig
from roost.cli.release import PlanError, Release, plan_release, updated_config


def group(name: str, *, services: bool = False, mounts: bool = False) -> GroupConfig:
    config: dict[str, Any] = {
        "image": "img:2",
        "metadata": {"fly_platform_version": "v2", "fly_process_group": name},
    }
    if services:
        config["services"] = [{"protocol": "tcp", "internal_port": 8080}]
    if mounts:
        config["mounts"] = [{"name": "data", "path": "/data"}]
    return GroupConfig(name, config)


def existing(mid: str, grp: str, release: str = "3", **config: Any) -> dict[str, Any]:
    metadata = {"fly_process_group": grp, "fly_release_version": release, "team": "core"}
    return {
        "id": mid,
        "state": "started",
        "region": "ams",
        "version": "01V1",
        "config": {"image": "img:1", "metadata": metadata, **config},
    }


@pytest.mark.parametrize(
    ("ha", "shapes"),
    [
        (True, [("web", 2, False), ("worker", 1, True), ("db", 1, False)]),
        (False, [("web", 1, False), ("worker", 1, False), ("db", 1, False)]),
    ],
)
def test_new_groups_get_flyctls_shape(ha: bool, shapes: list[tuple[str, int, bool]]) -> None:
    groups = [group("web", services=True), group("worker"), group("db", mounts=True)]
    plan = plan_release(groups, [], region="ams", ha=ha)
    assert [(lg.group, lg.count, lg.standby) for lg in plan.launches] == shapes
    assert all(lg.region == "ams" for lg in plan.launches)
    assert plan.release.version == 1
    assert plan.launches[0].config["metadata"]["fly_release_version"] == "1"


def test_existing_groups_are_updated_and_others_removed() -> None:
    machines = [
        existing("s1", "worker", standbys=["w1"], env={"FLY_STANDBY_FOR": "w1"}),
        existing("w1", "worker"),
        existing("o1", "old"),
        {**existing("x1", ""), "config": {"image": "img:1"}},
        {**existing("d1", "worker"), "state": "destroyed"},
    ]
    plan = plan_release([group("worker")], machines, region=None)
    assert plan.release.version == 4
    # Standbys after the machines they watch.
    assert [u.id for u in plan.updates] == ["w1", "s1"]
    assert [m["id"] for m in plan.removals] == ["o1"]
    assert [m["id"] for m in plan.detached] == ["x1"]
    standby = plan.updates[1].config
    assert standby["standbys"] == ["w1"] and standby["env"] == {"FLY_STANDBY_FOR": "w1"}
    metadata = plan.updates[0].config["metadata"]
    assert metadata["team"] == "core" and metadata["fly_release_version"] == "4"


def test_a_group_that_gains_services_loses_its_standbys() -> None:
    machine = existing("s1", "web", standbys=["w1"], env={"FLY_STANDBY_FOR": "w1"})
    grp = group("web", services=True)
    config = updated_config(machine, grp.config, grp)
    assert "standbys" not in config and "env" not in config


def test_a_machine_keeps_its_volume() -> None:
    grp = group("db", mounts=True)
    mounted = existing("m1", "db", mounts=[{"volume": "vol_1", "path": "/old"}])
    assert updated_config(mounted, grp.config, grp)["mounts"] == [
        {"name": "data", "path": "/data", "volume": "vol_1"}
    ]
    with pytest.raises(PlanError, match="has no volume, and an update cannot add one"):
        updated_config(existing("m2", "db"), grp.config, grp)


def test_release_numbers_follow_the_newest() -> None:
    machines = [existing("a", "web", "7"), existing("b", "web", "12"), existing("c", "web", "x")]
    assert Release.after(machines).version == 13
