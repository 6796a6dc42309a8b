"""The process driver: the same API and lifecycle without isolation (no root needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.platform import RoostServer, new_server
from tests.integration.platform.helpers import create, destroy, events, new_app, run, wait

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def plain(
    tmp_path_factory: pytest.TempPathFactory, demo_images: dict[str, str]
) -> Iterator[RoostServer]:
    server = new_server(tmp_path_factory.mktemp("plain"), driver="process")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def test_machines_run_and_exit_codes_are_kept(
    plain: RoostServer, demo_images: dict[str, str]
) -> None:
    c = plain.client()
    app = new_app(c, "plain")
    script = {"exec": ["/bin/sh", "-c", "echo hi; exit 3"]}
    machine = create(
        c, app, {"image": demo_images["roost/busybox"], "init": script, "restart": {"policy": "no"}}
    )
    wait(c, app, machine["id"], "stopped")
    exit_event = next(e for e in events(c, app, machine["id"]) if e["type"] == "exit")
    assert exit_event["request"]["exit_event"]["exit_code"] == 3

    looping = {"exec": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}
    long = run(c, app, {"image": demo_images["roost/busybox"], "init": looping})
    r = c.post(f"/v1/apps/{app}/machines/{long['id']}/stop", json={"signal": "SIGTERM"})
    assert r.status_code == 200
    wait(c, app, long["id"], "stopped")
    for m in (machine, long):
        destroy(c, app, m["id"])
