"""Inside a real machine: the syscall filter holds, and the classic ways out fail."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.platform import RoostServer
from tests.integration.platform.helpers import destroy, new_app, run

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def machine(
    roost: RoostServer, demo_images: dict[str, str]
) -> Iterator[tuple[httpx.Client, str, str]]:
    c = roost.client()
    app = new_app(c, "iso")
    config = {"image": demo_images["roost/busybox"], "init": {"exec": ["/bin/sleep", "3600"]}}
    m = run(c, app, config)
    yield c, app, m["id"]
    destroy(c, app, m["id"])
    c.close()


def sh(machine: tuple[httpx.Client, str, str], script: str) -> dict[str, object]:
    c, app, mid = machine
    r = c.post(f"/v1/apps/{app}/machines/{mid}/exec", json={"command": ["/bin/sh", "-c", script]})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_syscall_filter_is_on(machine: tuple[httpx.Client, str, str]) -> None:
    status = sh(machine, "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")["stdout"]
    assert "Seccomp:\t2" in str(status) and "NoNewPrivs:\t1" in str(status)


@pytest.mark.parametrize(
    "attempt",
    [
        "unshare -U -r id",  # a user namespace: every capability, inside it
        "unshare -m true",
        "mount -t tmpfs none /mnt",
        "nsenter -t 1 -m true",
    ],
)
def test_the_ways_out_are_refused(machine: tuple[httpx.Client, str, str], attempt: str) -> None:
    ran = sh(machine, attempt)
    assert ran["exit_code"] != 0, ran
    # EPERM, in busybox's words for each applet.
    assert any(
        words in str(ran["stderr"]) for words in ("Operation not permitted", "permission denied")
    ), ran


def test_host_state_is_out_of_reach(machine: tuple[httpx.Client, str, str]) -> None:
    assert sh(machine, "test -s /proc/kcore && echo readable || echo masked")["stdout"] == (
        "masked\n"
    )
    ran = sh(machine, "echo x > /proc/sys/kernel/core_pattern")
    assert ran["exit_code"] != 0 and "Read-only file system" in str(ran["stderr"])
    ran = sh(machine, "echo 100 > /sys/fs/cgroup/pids/pids.max")
    assert ran["exit_code"] != 0
