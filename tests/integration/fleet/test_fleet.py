"""A fleet of three hosts in network namespaces (h1, h2 in ams; h3 in fra), each with an
agent and a proxy, over a real etcd: placement, capacity, cross-host routing, a host
killed under load, standbys, a returning host, etcd going away, and a volume's snapshot
restored on another host."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from roost.drill.load import LoadGenerator, Sample
from tests.fixtures.fleet import Fleet
from tests.integration.platform.helpers import create, get, new_app, run, until, wait

pytestmark = pytest.mark.root


def web(fleet: Fleet) -> dict[str, Any]:
    """busybox httpd answering with its machine id, behind the proxy's HTTP port."""
    script = 'mkdir -p /www && echo "hello from $FLY_MACHINE_ID" > /www/index.html && '
    return {
        "image": fleet.images["roost/busybox"],
        "init": {"exec": ["/bin/sh", "-c", script + "exec httpd -f -p 8080 -h /www"]},
        "services": [
            {
                "protocol": "tcp",
                "internal_port": 8080,
                "ports": [{"port": 80, "handlers": ["http"]}],
            }
        ],
    }


def worker(fleet: Fleet) -> dict[str, Any]:
    return {"image": fleet.images["roost/busybox"], "init": {"exec": ["/bin/sleep", "inf"]}}


def host_of(fleet: Fleet, machine_id: str) -> str:
    with fleet.client() as c:
        for host in c.get("/v1/hosts").json():
            if any(m["id"] == machine_id for m in host["machines"]):
                return str(host["id"])
    raise AssertionError(f"machine {machine_id} is on no host")


def proxy_get(fleet: Fleet, host: str, app: str) -> httpx.Response:
    return httpx.get(fleet.hosts[host].proxy_url, headers={"Host": f"{app}.localhost"}, timeout=10)


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, fleet: Fleet) -> Iterator[None]:
    """A failed test shows what the fleet's processes logged."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(fleet.logs())


@pytest.fixture
def c(fleet: Fleet) -> Iterator[httpx.Client]:
    with fleet.client() as client:
        yield client


def test_hosts_list_shows_the_fleet(fleet: Fleet) -> None:
    result = fleet.cli("hosts", "list", "--json")
    assert result.returncode == 0, result.stderr
    hosts = {h["id"]: h for h in json.loads(result.stdout)}
    assert {h: (v["region"], v["state"]) for h, v in hosts.items()} == {
        "h1": ("ams", "up"),
        "h2": ("ams", "up"),
        "h3": ("fra", "up"),
    }
    assert hosts["h3"]["proxy"] == f"{fleet.hosts['h3'].address}:8081"
    table = fleet.cli("hosts", "list")
    assert table.returncode == 0 and "h3" in table.stdout and "fra" in table.stdout


def test_an_apps_machines_spread_and_capacity_errors_name_the_regions(
    fleet: Fleet, c: httpx.Client
) -> None:
    app = new_app(c, "spread")
    machines = [create(c, app, worker(fleet), region="ams") for _ in range(4)]
    assert Counter(host_of(fleet, m["id"]) for m in machines) == {"h1": 2, "h2": 2}
    for m in machines:
        wait(c, app, m["id"], "started")
    # Each host schedules 4096 MB: no host anywhere fits this.
    too_big = {**worker(fleet), "guest": {"cpu_kind": "performance", "cpus": 4, "memory_mb": 8192}}
    r = c.post(f"/v1/apps/{app}/machines", json={"config": too_big, "region": "fra,ams"})
    assert r.status_code == 412, r.text
    assert r.json()["status"] == "insufficient_capacity"
    assert "region(s) fra, ams" in r.json()["error"]
    result = fleet.cli("scale", "count", "6", "-a", app, "--region", "ams,fra", "--yes")
    assert result.returncode == 0, result.stderr
    listed = c.get(f"/v1/apps/{app}/machines").json()
    assert Counter(m["region"] for m in listed) == {"ams": 5, "fra": 1}


def test_a_clone_in_another_region_is_served_through_its_hosts_proxy(
    fleet: Fleet, c: httpx.Client
) -> None:
    app = new_app(c, "clone")
    original = run(c, app, web(fleet), region="ams")
    result = fleet.cli("machine", "clone", original["id"], "-a", app, "--region", "fra")
    assert result.returncode == 0, result.stderr
    clone = next(m for m in c.get(f"/v1/apps/{app}/machines").json() if m["id"] != original["id"])
    assert (clone["region"], host_of(fleet, clone["id"])) == ("fra", "h3")
    wait(c, app, clone["id"], "started")
    c.post(f"/v1/apps/{app}/machines/{original['id']}/stop").raise_for_status()
    wait(c, app, original["id"], "stopped")
    # h1's proxy has no fra machine of its own: it goes through h3's proxy.
    r = proxy_get(fleet, "h1", app)
    assert r.status_code == 200, r.text
    assert r.text == f"hello from {clone['id']}\n"
    assert r.headers["fly-machine-id"] == clone["id"]


def failover_app(
    fleet: Fleet, c: httpx.Client, prefix: str
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """An app with a web machine and a job on h1 (ams), a web machine on h3 (fra), and a
    standby for the job on h3."""
    app = new_app(c, prefix)
    # h2 cordoned: the app's ams machines both land on h1.
    assert fleet.cli("hosts", "cordon", "h2").returncode == 0
    try:
        near = run(c, app, web(fleet), region="ams")
        job = run(c, app, worker(fleet), region="ams")
    finally:
        assert fleet.cli("hosts", "uncordon", "h2").returncode == 0
    far = run(c, app, web(fleet), region="fra")
    assert {host_of(fleet, near["id"]), host_of(fleet, job["id"])} == {"h1"}
    standby = fleet.cli(
        "machine", "clone", job["id"], "-a", app, "--region", "fra", "--standby-for", "source"
    )
    assert standby.returncode == 0, standby.stderr
    standby_id = next(
        m["id"] for m in c.get(f"/v1/apps/{app}/machines").json() if m["config"].get("standbys")
    )
    assert get(c, app, standby_id)["state"] == "created"
    return app, near, job, far, standby_id


def test_a_host_killed_under_load_fails_over_and_returns_without_duplicates(
    fleet: Fleet, c: httpx.Client
) -> None:
    app, near, job, far, standby_id = failover_app(fleet, c, "failover")

    # Traffic enters at h2 (ams): h1's machine is nearer than h3's, so it takes it.
    load = LoadGenerator(fleet.hosts["h2"].proxy_url, f"{app}.localhost", rps=40)
    with Background(load) as background:
        background.until(lambda s: s.ok and s.machine == near["id"])
        fleet.hosts["h1"].kill()
        killed = load.clock()
        wait(c, app, standby_id, "started", 30)
        # Once the host is known lost, every request goes to the fra machine.
        settled = load.clock()
        background.until(lambda s: s.sent > settled + 1.0)
    after = [s for s in load.samples if s.sent > settled]
    assert after and all(s.ok and s.machine == far["id"] for s in after)
    assert any(s.sent > killed and s.ok and s.machine == far["id"] for s in load.samples)
    assert get(c, app, near["id"])["host_status"] == "unreachable"
    assert get(c, app, job["id"])["host_status"] == "unreachable"

    # The host comes back: it reconciles from the store before starting anything, so
    # the job its standby replaced stays down.
    fleet.hosts["h1"].start()
    wait(c, app, near["id"], "started", 30)
    wait(c, app, job["id"], "stopped", 30)
    assert get(c, app, job["id"])["host_status"] == "ok"
    assert get(c, app, standby_id)["state"] == "started"
    events = c.get(f"/v1/apps/{app}/machines/{job['id']}/events").json()
    assert ("stop", "replaced_by_standby") in [(e["type"], e["status"]) for e in events]


class Background:
    """The load generator on a loop of its own, so the test itself may block."""

    def __init__(self, load: LoadGenerator) -> None:
        self.load = load
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stop = asyncio.Event()

    def __enter__(self) -> Background:
        self.thread.start()
        self.running = asyncio.run_coroutine_threadsafe(self.load.run(self.stop), self.loop)
        return self

    def until(self, predicate: Callable[[Sample], bool], timeout: float = 60) -> Sample:
        found = asyncio.run_coroutine_threadsafe(self.load.until(predicate), self.loop)
        return found.result(timeout)

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        try:
            self.running.result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


def test_proxies_keep_serving_while_etcd_is_down(fleet: Fleet, c: httpx.Client) -> None:
    app = new_app(c, "etcd")
    machine = run(c, app, web(fleet), region="fra")
    assert proxy_get(fleet, "h1", app).status_code == 200
    assert fleet.etcd is not None
    from tests.fixtures.registry import run_async

    run_async(fleet.etcd.kill())
    try:
        for host in ("h1", "h3"):
            r = proxy_get(fleet, host, app)
            assert r.status_code == 200 and r.headers["fly-machine-id"] == machine["id"]
    finally:
        fleet.etcd.spawn()
        run_async(fleet.etcd.wait_healthy(10))
    fleet.until(
        lambda: all((fleet.host_view(h) or {}).get("state") == "up" for h in fleet.hosts),
        "every host to be up again after etcd returned",
    )
    assert proxy_get(fleet, "h2", app).status_code == 200


def test_host_down_drill_reports_and_restores(fleet: Fleet, c: httpx.Client) -> None:
    app, near, job, far, _ = failover_app(fleet, c, "drill")
    result = fleet.cli(
        "drill", "host-down", "h1", "-a", app, "--url", fleet.hosts["h2"].proxy_url,
        "--hold", "8", "--rps", "20", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["hosts"] == ["h1"]
    assert 0 < report["detected_after"] < 8
    assert report["traffic_elsewhere_after"] is not None
    (standby_after,) = report["standbys"].values()
    assert standby_after is not None and standby_after < 8
    assert report["requests"] > 0 and report["ran_twice"] == []
    # The machines on h1 kept running behind the cut (a partition, not a crash) and
    # the one its standby replaced was stopped when h1 came back.
    assert fleet.host_view("h1")["state"] == "up"  # type: ignore[index]
    assert get(c, app, near["id"])["state"] == "started"
    assert get(c, app, job["id"])["state"] == "stopped"
    assert get(c, app, far["id"])["state"] == "started"


def test_region_down_drill_cuts_every_host_of_the_region(fleet: Fleet, c: httpx.Client) -> None:
    app = new_app(c, "regiondown")
    run(c, app, web(fleet), region="fra")
    run(c, app, web(fleet), region="ams")
    result = fleet.cli(
        "drill", "region-down", "fra", "-a", app, "--url", fleet.hosts["h1"].proxy_url,
        "--hold", "7", "--rps", "10", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["hosts"] == ["h3"] and report["detected_after"] is not None
    assert report["failed"] == 0, report
    unknown = fleet.cli("drill", "region-down", "syd", "-a", app, "--rps", "0")
    assert unknown.returncode == 1 and "no host is in region syd" in unknown.stderr


def test_a_volume_snapshot_restores_on_a_host_in_another_region(
    fleet: Fleet, c: httpx.Client
) -> None:
    app = new_app(c, "volumes")

    def volume(volume_id: str) -> dict[str, Any]:
        r = c.get(f"/v1/apps/{app}/volumes/{volume_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def mounting(volume_id: str) -> dict[str, Any]:
        return {**worker(fleet), "mounts": [{"volume": volume_id, "path": "/data"}]}

    def sh(machine_id: str, script: str) -> str:
        r = c.post(
            f"/v1/apps/{app}/machines/{machine_id}/exec",
            json={"command": ["/bin/sh", "-c", script], "timeout": 20},
        )
        assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
        return str(r.json()["stdout"])

    r = c.post(f"/v1/apps/{app}/volumes", json={"name": "data", "region": "ams", "size_gb": 1})
    assert r.status_code == 200, r.text
    source = r.json()
    assert source["zone"] in ("h1", "h2")
    writer = run(c, app, mounting(source["id"]))
    # A machine with a volume runs on the volume's host.
    assert host_of(fleet, writer["id"]) == source["zone"]
    sh(writer["id"], "echo written in ams > /data/file && sync")

    r = c.post(f"/v1/apps/{app}/volumes/{source['id']}/snapshots")
    assert r.status_code == 200, r.text
    snapshot_id = r.json()["id"]
    snapshots = f"/v1/apps/{app}/volumes/{source['id']}/snapshots"
    until(lambda: c.get(snapshots).json()[0]["status"] == "created")

    # Restored on h3: its agent streams the snapshot from the source host's agent.
    r = c.post(
        f"/v1/apps/{app}/volumes",
        json={"name": "data", "region": "fra", "snapshot_id": snapshot_id},
    )
    assert r.status_code == 200, r.text
    restored = r.json()
    assert (restored["zone"], restored["size_gb"]) == ("h3", 1)
    until(lambda: volume(restored["id"])["state"] == "created")
    reader = run(c, app, mounting(restored["id"]))
    assert host_of(fleet, reader["id"]) == "h3"
    assert sh(reader["id"], "cat /data/file") == "written in ams\n"
