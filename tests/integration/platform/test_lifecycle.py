"""Machines through the API on a real server: runc, registry images, network namespaces."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures.platform import RoostServer
from tests.integration.platform.helpers import (
    create,
    destroy,
    events,
    get,
    http_get,
    ipv4,
    new_app,
    run,
    until,
    wait,
)

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def c(roost: RoostServer) -> httpx.Client:
    return roost.client()


@pytest.fixture(scope="module")
def app(c: httpx.Client) -> str:
    return new_app(c, "life")


def shell(demo_images: dict[str, str], script: str, **config: object) -> dict[str, object]:
    return {
        "image": demo_images["roost/busybox"],
        "init": {"exec": ["/bin/sh", "-c", script]},
        **config,
    }


def test_web_machine_serves_on_both_addresses(
    c: httpx.Client, app: str, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    machine = run(c, app, {"image": demo_images["roost/hello"]})
    assert machine["state"] == "started"
    assert machine["image_ref"]["digest"].startswith("sha256:")
    assert [e["type"] for e in machine["events"]][:2] == ["start", "launch"]
    assert http_get(f"http://{ipv4(machine, roost)}:8080/").text == "Hello from roost\n"
    assert http_get(f"http://[{machine['private_ip']}]:8080/").text == "Hello from roost\n"
    destroy(c, app, machine["id"])


def test_stop_start_restart_and_fresh_rootfs(
    c: httpx.Client, app: str, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    # Each start is a blank slate: the marker written by one run is gone in the next.
    script = (
        "mkdir -p /www; if [ -e /marker ]; then echo dirty > /www/index.html; "
        "else echo clean > /www/index.html; fi; touch /marker; "
        "trap 'exit 0' TERM INT; httpd -f -p 8080 -h /www & wait"
    )
    machine = run(c, app, shell(demo_images, script))
    mid, url = machine["id"], f"http://{ipv4(machine, roost)}:8080/"
    assert http_get(url).text == "clean\n"

    r = c.post(f"/v1/apps/{app}/machines/{mid}/stop", json={"signal": "SIGTERM", "timeout": "10s"})
    assert r.status_code == 200, r.text
    wait(c, app, mid, "stopped")
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=1)

    r = c.post(f"/v1/apps/{app}/machines/{mid}/start")
    assert r.json()["previous_state"] == "stopped"
    wait(c, app, mid, "started")
    assert http_get(url).text == "clean\n"

    r = c.post(f"/v1/apps/{app}/machines/{mid}/restart", params={"signal": "SIGTERM"})
    assert r.status_code == 200, r.text
    wait(c, app, mid, "started")
    assert http_get(url).text == "clean\n"

    kinds = [(e["type"], e["status"]) for e in events(c, app, mid)]
    assert ("stop", "stopped") in kinds
    assert ("restart", "restarting") in kinds
    assert kinds[-1] == ("launch", "created")
    exits = [e for e in events(c, app, mid) if e["type"] == "exit"]
    assert all(e["request"]["exit_event"]["requested_stop"] for e in exits)
    assert exits[0]["request"]["exit_event"]["exit_code"] == 0
    destroy(c, app, mid)


def test_exit_code_and_restart_policies(
    c: httpx.Client, app: str, demo_images: dict[str, str]
) -> None:
    no = create(c, app, shell(demo_images, "exit 42", restart={"policy": "no"}))
    wait(c, app, no["id"], "stopped")
    exit_event = next(e for e in events(c, app, no["id"]) if e["type"] == "exit")
    assert exit_event["request"]["exit_event"]["exit_code"] == 42
    assert exit_event["request"]["exit_event"]["requested_stop"] is False

    retry = create(
        c, app, shell(demo_images, "exit 3", restart={"policy": "on-failure", "max_retries": 2})
    )

    def exits() -> list[dict[str, object]]:
        return [e for e in events(c, app, retry["id"]) if e["type"] == "exit"]

    until(lambda: len(exits()) == 3 and get(c, app, retry["id"])["state"] == "stopped")
    restarts = [e for e in events(c, app, retry["id"]) if e["type"] == "restart"]
    assert len(restarts) == 2 and all(e["source"] == "flyd" for e in restarts)

    gone = create(c, app, shell(demo_images, "exit 0", auto_destroy=True, restart={"policy": "no"}))
    wait(c, app, gone["id"], "destroyed")
    listed = c.get(f"/v1/apps/{app}/machines").json()
    assert gone["id"] not in [m["id"] for m in listed]
    with_deleted = c.get(f"/v1/apps/{app}/machines", params={"include_deleted": "true"}).json()
    assert gone["id"] in [m["id"] for m in with_deleted]
    for m in (no, retry):
        destroy(c, app, m["id"])


def test_update_makes_a_new_version_and_reboots(
    c: httpx.Client, app: str, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    script = "mkdir -p /www; echo $GREETING > /www/index.html; exec httpd -f -p 8080 -h /www"
    machine = run(c, app, shell(demo_images, script, env={"GREETING": "one"}))
    mid, url = machine["id"], f"http://{ipv4(machine, roost)}:8080/"
    assert http_get(url).text == "one\n"

    config = machine["config"] | {"env": {"GREETING": "two"}}
    stale = c.post(
        f"/v1/apps/{app}/machines/{mid}", json={"config": config, "current_version": "01ABC"}
    )
    assert stale.status_code == 409 and "version" in stale.json()["error"]

    r = c.post(
        f"/v1/apps/{app}/machines/{mid}",
        json={"config": config, "current_version": machine["version"]},
    )
    assert r.status_code == 200, r.text
    new_version = r.json()["version"]
    assert new_version != machine["version"]
    wait(c, app, mid, "started", version=new_version)
    assert http_get(url).text == "two\n"

    versions = c.get(f"/v1/apps/{app}/machines/{mid}/versions").json()
    assert [v["version"] for v in versions] == [new_version, machine["version"]]
    old = c.get(f"/v1/apps/{app}/machines/{mid}", params={"version": machine["version"]}).json()
    assert old["state"] == "replaced" and old["config"]["env"] == {"GREETING": "one"}
    destroy(c, app, mid)


def test_destroy_running_needs_force_and_cleans_up(
    c: httpx.Client, app: str, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    machine = run(c, app, {"image": demo_images["roost/hello"]})
    mid = machine["id"]
    r = c.delete(f"/v1/apps/{app}/machines/{mid}")
    assert r.status_code == 412 and "force" in r.json()["error"]
    destroy(c, app, mid)
    assert get(c, app, mid)["state"] == "destroyed"
    assert not Path(f"/run/netns/{roost.netns_prefix}{mid}").exists()
    assert not (roost.data_dir / "agent/machines" / mid).exists()
    assert mid not in Path("/proc/self/mounts").read_text()
    memory = Path("/sys/fs/cgroup/memory") / roost.cgroup_parent.lstrip("/") / mid
    assert not memory.exists()
    r = c.post(f"/v1/apps/{app}/machines/{mid}/start")
    assert r.status_code == 404


def test_guest_limits_and_isolation(
    c: httpx.Client, app: str, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    script = (
        "mkdir -p /www; grep -E 'CapEff|NoNewPrivs' /proc/self/status > /www/status; "
        "env > /www/env; exec httpd -f -p 8080 -h /www"
    )
    machine = run(c, app, shell(demo_images, script, guest={"cpus": 2, "memory_mb": 128}))
    mid = machine["id"]
    cg = roost.cgroup_parent.lstrip("/")
    memory = Path(f"/sys/fs/cgroup/memory/{cg}/{mid}/memory.limit_in_bytes").read_text()
    assert int(memory) == 128 * 1024 * 1024
    quota = Path(f"/sys/fs/cgroup/cpu/{cg}/{mid}/cpu.cfs_quota_us").read_text()
    assert int(quota) == 200000
    base = f"http://{ipv4(machine, roost)}:8080"
    status = dict(line.split(":\t") for line in http_get(f"{base}/status").text.splitlines())
    assert status["NoNewPrivs"] == "1"
    assert int(status["CapEff"], 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
    env = dict(line.split("=", 1) for line in http_get(f"{base}/env").text.splitlines())
    assert env["FLY_MACHINE_ID"] == mid
    assert env["FLY_APP_NAME"] == app
    assert env["FLY_REGION"] == "test"
    assert env["FLY_PRIVATE_IP"] == machine["private_ip"]
    assert env["FLY_IMAGE_REF"].endswith(machine["image_ref"]["digest"])
    destroy(c, app, mid)


def test_out_of_memory_is_reported(c: httpx.Client, app: str, demo_images: dict[str, str]) -> None:
    hog = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
    machine = create(
        c, app, shell(demo_images, hog, guest={"memory_mb": 64}, restart={"policy": "no"})
    )
    wait(c, app, machine["id"], "stopped")
    exit_event = next(e for e in events(c, app, machine["id"]) if e["type"] == "exit")
    assert exit_event["request"]["exit_event"]["oom_killed"] is True
    destroy(c, app, machine["id"])


def test_signal_reaches_the_process(c: httpx.Client, app: str, demo_images: dict[str, str]) -> None:
    script = "trap 'exit 7' USR1; while true; do sleep 1 & wait; done"
    machine = run(c, app, shell(demo_images, script, restart={"policy": "no"}))
    r = c.post(f"/v1/apps/{app}/machines/{machine['id']}/signal", json={"signal": 10})
    assert r.status_code == 200, r.text
    wait(c, app, machine["id"], "stopped")
    exit_event = next(e for e in events(c, app, machine["id"]) if e["type"] == "exit")
    assert exit_event["request"]["exit_event"]["exit_code"] == 7
    r = c.post(f"/v1/apps/{app}/machines/{machine['id']}/signal", json={"signal": "SIGBOGUS"})
    assert r.status_code == 400
    destroy(c, app, machine["id"])


def test_health_checks(c: httpx.Client, app: str, demo_images: dict[str, str]) -> None:
    config = {
        "image": demo_images["roost/hello"],
        "checks": {
            "web": {"type": "http", "port": 8080, "path": "/", "interval": "1s"},
            "closed": {"type": "tcp", "port": 9999, "interval": "1s", "timeout": "1s"},
        },
    }
    machine = run(c, app, config)
    mid = machine["id"]
    checks: dict[str, str] = {}
    for _ in range(20):
        checks = {ch["name"]: ch["status"] for ch in get(c, app, mid)["checks"]}
        if checks.get("web") == "passing" and checks.get("closed") == "critical":
            break
        c.get(f"/v1/apps/{app}/machines/{mid}/wait", params={"state": "stopped", "timeout": 1})
    assert checks == {"web": "passing", "closed": "critical"}
    destroy(c, app, mid)


def test_unpullable_image_fails_the_machine(
    c: httpx.Client, app: str, demo_images: dict[str, str]
) -> None:
    registry = demo_images["roost/hello"].split("/")[0]
    machine = create(c, app, {"image": f"{registry}/nope/missing:1"})
    wait(c, app, machine["id"], "failed", timeout=30)
    failure = next(e for e in events(c, app, machine["id"]) if e["status"] == "failed")
    assert "nope/missing" in failure["message"]
    r = c.delete(f"/v1/apps/{app}/machines/{machine['id']}")
    assert r.status_code == 200, r.text
    wait(c, app, machine["id"], "destroyed")


def test_kill_and_restart_readopts_and_finishes_interrupted_stop(
    roost: RoostServer, demo_images: dict[str, str]
) -> None:
    c = roost.client()
    app = new_app(c, "crash")
    stubborn = run(c, app, shell(demo_images, "trap '' TERM INT; while true; do sleep 1; done"))
    web = run(c, app, {"image": demo_images["roost/hello"]})
    url = f"http://{ipv4(web, roost)}:8080/"
    pids = {m["id"]: roost.container_pid(m["id"]) for m in (stubborn, web)}

    # The stop waits out its timeout; kill the server in the middle of it.
    r = c.post(
        f"/v1/apps/{app}/machines/{stubborn['id']}/stop",
        json={"signal": "SIGTERM", "timeout": "3s"},
    )
    assert r.status_code == 200
    c.get(
        f"/v1/apps/{app}/machines/{stubborn['id']}/wait", params={"state": "stopped", "timeout": 1}
    )
    assert get(c, app, stubborn["id"])["state"] == "stopping"
    roost.kill()
    assert http_get(url).text == "Hello from roost\n"  # machines outlive the server

    roost.start()
    c = roost.client()
    assert get(c, app, web["id"])["state"] == "started"
    assert roost.container_pid(web["id"]) == pids[web["id"]]  # adopted, not restarted
    assert http_get(url).text == "Hello from roost\n"
    wait(c, app, stubborn["id"], "stopped", timeout=20)
    assert roost.container_pid(stubborn["id"]) is None
    for m in (stubborn, web):
        destroy(c, app, m["id"])


def test_suspend_falls_back_to_stop_and_says_so(
    c: httpx.Client, app: str, demo_images: dict[str, str]
) -> None:
    machine = run(c, app, {"image": demo_images["roost/hello"]})
    mid = machine["id"]
    r = c.post(f"/v1/apps/{app}/machines/{mid}/suspend")
    assert r.status_code == 200, r.text
    wait(c, app, mid, "stopped")
    suspend = next(e for e in events(c, app, mid) if e["type"] == "suspend")
    assert "stopped instead" in suspend["message"]
    destroy(c, app, mid)


def test_wait_from_event_id_only_counts_later_states(
    c: httpx.Client, app: str, demo_images: dict[str, str]
) -> None:
    machine = run(c, app, {"image": demo_images["roost/hello"]})
    mid = machine["id"]
    first = wait(c, app, mid, "started")
    r = c.get(
        f"/v1/apps/{app}/machines/{mid}/wait",
        params={"state": "started", "timeout": 1, "from_event_id": first["event_id"]},
    )
    assert r.status_code == 408
    c.post(f"/v1/apps/{app}/machines/{mid}/restart")
    later = wait(c, app, mid, "started", from_event_id=first["event_id"])
    assert later["event_id"] > first["event_id"]
    destroy(c, app, mid)
