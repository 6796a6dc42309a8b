"""Seeing into machines: logs (kept across restarts, followed live), exec, processes."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.platform import RoostServer, new_server
from tests.integration.platform.helpers import destroy, new_app, run, until, wait

pytestmark = pytest.mark.root

TICKER = (
    "echo hello-out; echo hello-err >&2; "
    "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, unreachable_routes: None, demo_images: dict[str, str]
) -> Iterator[RoostServer]:
    # Its own server: one test kills and restarts it.
    server = new_server(tmp_path_factory.mktemp("observe"))
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def ticker(demo_images: dict[str, str]) -> dict[str, Any]:
    return {"image": demo_images["roost/busybox"], "init": {"exec": ["/bin/sh", "-c", TICKER]}}


def read_logs(c: httpx.Client, app: str, **params: Any) -> list[dict[str, Any]]:
    r = c.get(f"/v1/apps/{app}/logs", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines()]


def messages(records: list[dict[str, Any]], stream: str | None = None) -> list[str]:
    return [r["message"] for r in records if stream is None or r["stream"] == stream]


def test_logs_have_streams_and_events_and_survive_restarts(
    server: RoostServer, demo_images: dict[str, str]
) -> None:
    c = server.client()
    app = new_app(c, "logs")
    machine = run(c, app, ticker(demo_images))
    mid = machine["id"]
    until(lambda: "tick 2" in messages(read_logs(c, app)))
    records = read_logs(c, app)
    assert "hello-out" in messages(records, "stdout")
    assert "hello-err" in messages(records, "stderr")
    assert "start: started" in messages(records, "event")
    first = records[0]
    assert set(first) == {"timestamp", "machine", "app", "region", "stream", "message"}
    assert first["machine"] == mid and first["app"] == app and first["region"] == "test"
    assert [r["timestamp"] for r in records] == sorted(r["timestamp"] for r in records)

    # A restart of the machine keeps what was logged and adds to it.
    c.post(f"/v1/apps/{app}/machines/{mid}/restart", params={"signal": "SIGKILL"})
    until(lambda: messages(read_logs(c, app), "stdout").count("hello-out") == 2)
    events = messages(read_logs(c, app), "event")
    assert any(e.startswith("exit: stopped (exit code 137") for e in events)
    assert "restart: restarting" in events

    # So does a crash and restart of the server (the agent).
    before = len(read_logs(c, app))
    server.kill()
    server.start()
    c = server.client()
    until(lambda: len(read_logs(c, app)) > before + 3)
    after = read_logs(c, app)
    assert after[:before] == read_logs(c, app)[:before], "nothing lost or rewritten"
    ticks = [int(m.split()[1]) for m in messages(after, "stdout") if m.startswith("tick")]
    # Lines written while the agent was down were picked up, without repeats.
    last_run = ticks[ticks.index(1, 1) :] if ticks.count(1) > 1 else ticks
    assert last_run == list(range(1, len(last_run) + 1))
    destroy(c, app, mid)


def test_follow_streams_new_lines(server: RoostServer, demo_images: dict[str, str]) -> None:
    c = server.client()
    app = new_app(c, "follow")
    machine = run(c, app, ticker(demo_images))
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def follow() -> None:
        with c.stream(
            "GET", f"/v1/apps/{app}/logs", params={"follow": "true", "limit": 0}
        ) as response:
            for line in response.iter_lines():
                seen.append(json.loads(line))
                if len([r for r in seen if r["message"].startswith("tick")]) >= 5:
                    done.set()
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert done.wait(15), f"only saw {seen}"
    ticks = [int(r["message"].split()[1]) for r in seen if r["message"].startswith("tick")]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    destroy(c, app, machine["id"])


def test_exec_and_ps(server: RoostServer, demo_images: dict[str, str]) -> None:
    c = server.client()
    app = new_app(c, "exec")
    machine = run(c, app, ticker(demo_images))
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    r = c.post(f"{base}/exec", json={"command": ["sh", "-c", "echo $FLY_MACHINE_ID; exit 5"]})
    assert r.status_code == 200, r.text
    assert r.json()["stdout"] == f"{machine['id']}\n" and r.json()["exit_code"] == 5
    r = c.post(f"{base}/exec", json={"cmd": "cat", "stdin": "piped in"})
    assert r.json()["stdout"] == "piped in"
    r = c.post(f"{base}/exec", json={"command": ["sleep", "30"], "timeout": 1})
    assert r.status_code == 200 and "timed out" in r.json()["stderr"]
    assert c.post(f"{base}/exec", json={}).status_code == 400

    processes = c.get(f"{base}/ps").json()
    commands = {p["pid"]: p["command"] for p in processes}
    assert commands[1].startswith("/.roost/init")  # tini as PID 1
    assert any("while true" in cmd for cmd in commands.values())
    assert all(p["rss"] > 0 and p["directory"] == "/" for p in processes)

    out = server.cli(
        "machine", "exec", machine["id"], "-a", app, "--", "sh", "-c", "echo hi; exit 3"
    )
    assert (out.returncode, out.stdout) == (3, "hi\n")
    logs = server.cli("logs", "-a", app, "--no-tail")
    assert logs.returncode == 0 and f"{app}[{machine['id']}] test [stdout] hello-out" in logs.stdout

    c.post(f"{base}/stop", json={"signal": "SIGKILL"})
    wait(c, app, machine["id"], "stopped")
    r = c.post(f"{base}/exec", json={"command": ["true"]})
    assert r.status_code == 412 and "start it first" in r.json()["error"]
    destroy(c, app, machine["id"])


def test_ps_shows_listening_sockets(server: RoostServer, demo_images: dict[str, str]) -> None:
    c = server.client()
    app = new_app(c, "ps")
    machine = run(c, app, {"image": demo_images["roost/hello"]})
    until(
        lambda: any(
            p["listen_sockets"] for p in c.get(f"/v1/apps/{app}/machines/{machine['id']}/ps").json()
        )
    )
    processes = c.get(f"/v1/apps/{app}/machines/{machine['id']}/ps").json()
    sockets = [s for p in processes for s in p["listen_sockets"]]
    assert {"proto": "tcp6", "address": "[::]:8080"} in sockets or any(
        s["address"].endswith(":8080") for s in sockets
    )
    destroy(c, app, machine["id"])


def test_console_over_websocket(server: RoostServer, demo_images: dict[str, str]) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    c = server.client()
    app = new_app(c, "console")
    machine = run(c, app, ticker(demo_images))
    url = server.url.replace("http", "ws") + f"/v1/apps/{app}/machines/{machine['id']}/console"
    auth = {"Authorization": f"Bearer {server.token}"}
    with connect(f"{url}?cols=100&rows=40", additional_headers=auth, open_timeout=10) as ws:
        ws.send(b"stty size; echo machine=$FLY_MACHINE_ID\n")
        output = b""
        while b"machine=" + machine["id"].encode() not in output:
            output += ws.recv(timeout=10)  # type: ignore[operator]
        assert b"40 100" in output
        ws.send(json.dumps({"resize": {"cols": 120, "rows": 50}}))
        ws.send(b"stty size\n")
        while b"50 120" not in output:
            output += ws.recv(timeout=10)  # type: ignore[operator]
        ws.send(b"exit 3\n")
        last: Any = None
        with contextlib.suppress(ConnectionClosed):
            while True:
                last = ws.recv(timeout=10)
        assert json.loads(last) == {"exit_code": 3}

    with connect(url, additional_headers={"Authorization": "Bearer nope"}) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4401
    c.post(f"/v1/apps/{app}/machines/{machine['id']}/stop", json={"signal": "SIGKILL"})
    wait(c, app, machine["id"], "stopped")
    with connect(url, additional_headers=auth) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4000 and "start it first" in (ws.close_reason or "")
    destroy(c, app, machine["id"])


def test_usage_adds_up(server: RoostServer, demo_images: dict[str, str]) -> None:
    import time

    c = server.client()
    app = new_app(c, "usage")
    t0 = time.time()
    machine = run(c, app, {"image": demo_images["roost/hello"], "guest": {"memory_mb": 512}})
    base = f"/v1/apps/{app}/machines/{machine['id']}"
    # Ran about 1 s, then stopped about 1 s: measured by waits on the API, not sleeps.
    c.get(f"{base}/wait", params={"state": "stopped", "timeout": 1})
    c.post(f"{base}/stop")
    wait(c, app, machine["id"], "stopped")
    t1 = time.time()
    c.get(f"{base}/wait", params={"state": "started", "timeout": 1})
    report = c.get(f"/v1/apps/{app}/usage").json()
    t2 = time.time()
    [usage] = report["machines"]
    running = usage["running_seconds"]["shared-1x-512mb"]
    assert 0.9 <= running <= t1 - t0 + 0.1
    assert 0.9 <= usage["stopped_seconds"] <= t2 - t0
    assert usage["rootfs_bytes"] > 1_000_000  # the busybox image, unpacked
    assert report["totals"]["running_seconds"] == {"shared-1x-512mb": running}
    cli = server.cli("usage", "-a", app)
    assert cli.returncode == 0 and machine["id"] in cli.stdout and "TOTAL" in cli.stdout
    destroy(c, app, machine["id"])


def test_metrics_parse_and_count(server: RoostServer, demo_images: dict[str, str]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    c = server.client()
    app = new_app(c, "metrics")
    config = {
        "image": demo_images["roost/hello"],
        "checks": {"web": {"type": "http", "port": 8080, "interval": "1s"}},
    }
    machine = run(c, app, config)
    assert httpx.get(f"{server.url}/metrics").status_code == 401

    def families() -> dict[str, Any]:
        r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return {f.name: f for f in text_string_to_metric_families(r.text)}

    def sample(family: Any, **labels: str) -> float | None:
        for s in family.samples:
            if all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return None

    until(
        lambda: sample(families()["roost_machine_check_status"], check="web", status="passing") == 1
    )
    metrics = families()
    assert sample(metrics["roost_machines"], state="started") >= 1
    assert sample(metrics["roost_machine_memory_bytes"], machine=machine["id"]) > 0
    limit = sample(metrics["roost_machine_memory_limit_bytes"], machine=machine["id"])
    assert limit == 256 * 1024 * 1024
    assert sample(metrics["roost_machine_cpu_seconds"], machine=machine["id"]) >= 0
    assert metrics["roost_machine_start_seconds"].samples
    assert sample(metrics["roost_image_pulls"], result="ok") >= 1
    assert sample(metrics["roost_api_requests"], method="GET", status="200") >= 1
    destroy(c, app, machine["id"])
