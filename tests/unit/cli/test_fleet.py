"""Fleet commands against a fake API: scale count, hosts."""

from __future__ import annotations

from typing import Any

import pytest

from roost.cli.scale import plan_count
from tests.unit.cli.fakes import APP, FakeAPI, RunCLI, machine

MACHINES = f"/v1/apps/{APP}/machines"


def m(mid: str, region: str, state: str = "started", **config: Any) -> dict[str, Any]:
    body = machine(id=mid, region=region, state=state)
    body["config"] = {**body["config"], **config}
    return body


@pytest.mark.parametrize(
    ("have", "regions", "count", "add", "remove"),
    [
        # Adding: round-robin from the first listed region.
        ([], ["ams", "fra", "iad"], 4, {"ams": 2, "fra": 1, "iad": 1}, {}),
        # Existing machines do not shift the start: flyctl does not rebalance.
        ([m("a1", "ams")], ["ams", "fra"], 4, {"ams": 2, "fra": 1}, {}),
        # Removing: round-robin from the second listed region, stopped machines first.
        (
            [m("a1", "ams"), m("a2", "ams", "stopped"), m("f1", "fra"), m("f2", "fra")],
            ["ams", "fra"],
            1,
            {},
            {"ams": ["a2"], "fra": ["f1", "f2"]},
        ),
        # Machines in unlisted regions are left alone.
        ([m("a1", "ams"), m("i1", "iad")], ["ams"], 1, {}, {}),
    ],
)
def test_plan_follows_flyctls_round_robin(
    have: list[dict[str, Any]],
    regions: list[str],
    count: int,
    add: dict[str, int],
    remove: dict[str, list[str]],
) -> None:
    plan = plan_count(have, regions, count, None)
    assert plan.add == add
    assert plan.remove == remove


def test_plan_respects_max_per_region() -> None:
    plan = plan_count([], ["ams", "fra"], 3, 2)
    assert plan.add == {"ams": 2, "fra": 1}


def test_scale_count_creates_in_exact_regions(roost: RunCLI, api: FakeAPI) -> None:
    standby = m("5b5b5b5b5b5b5b", "fra", "stopped", standbys=["a1"])
    api.on("GET", MACHINES, (200, [m("a1", "ams"), standby]))
    api.on(
        "POST",
        MACHINES,
        (200, machine(id="1111aaaa2222bb", region="fra")),
        (200, machine(id="3333cccc4444dd", region="ams")),
    )
    result = roost("scale", "count", "3", "-a", APP, "--region", "fra,ams", "--yes")
    assert result.exit_code == 0, result.output
    creates = api.to("POST", MACHINES)
    assert [c.body["region"] for c in creates] == ["fra", "ams"]
    assert all("standbys" not in c.body["config"] for c in creates)
    assert "runs 3 machine(s) over fra, ams" in result.stdout


def test_scale_count_is_all_or_nothing(roost: RunCLI, api: FakeAPI) -> None:
    api.on("GET", MACHINES, (200, [m("a1", "ams")]))
    capacity = {"error": "insufficient resources in region(s) fra"}
    api.on("POST", MACHINES, (200, machine(id="1111aaaa2222bb", region="ams")), (412, capacity))
    api.on("DELETE", f"{MACHINES}/1111aaaa2222bb", (200, {"ok": True}))
    result = roost("scale", "count", "3", "-a", APP, "--region", "ams,fra", "--yes")
    assert result.exit_code == 1
    assert "insufficient resources" in result.stderr
    (destroy,) = api.to("DELETE", f"{MACHINES}/1111aaaa2222bb")
    assert destroy.params["force"] == ["true"]


def test_scale_count_removes_stopped_first(roost: RunCLI, api: FakeAPI) -> None:
    have = [m("a1", "ams"), m("a2", "ams", "stopped")]
    api.on("GET", MACHINES, (200, have))
    api.on("DELETE", f"{MACHINES}/a2", (200, {"ok": True}))
    result = roost("scale", "count", "1", "-a", APP, "--yes")
    assert result.exit_code == 0, result.output
    assert [c.path for c in api.calls if c.method == "DELETE"] == [f"{MACHINES}/a2"]


def test_hosts_list(roost: RunCLI, api: FakeAPI) -> None:
    host = {
        "id": "h1",
        "region": "ams",
        "state": "down",
        "cordoned": True,
        "epoch": 3,
        "address": "10.0.0.1:4281",
        "proxy": None,
        "driver": "runc",
        "capacity": {"cpus": 8, "memory_mb": 4096},
        "allocated": {"cpus": 2, "memory_mb": 512, "machines": 2},
        "machines": [{"id": "a1", "app": APP}, {"id": "a2", "app": APP}],
        "registered_at": "2026-11-22T00:00:00Z",
        "lost_at": "2026-11-22T00:01:00Z",
    }
    api.on("GET", "/v1/hosts", (200, [host]))
    result = roost("hosts", "list")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == [
        "ID", "REGION", "STATE", "CPUS", "MEMORY", "MACHINES", "EPOCH", "PROXY"
    ]  # fmt: skip
    assert row.split() == [
        "h1", "ams", "down", "(cordoned)", "2/8", "512/4096", "MB", "2", "3", "-"
    ]  # fmt: skip
