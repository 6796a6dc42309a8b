"""Inside a real machine: the syscall filter holds, and the classic ways out fail.

Busybox's applets try the obvious (unshare, mount, nsenter); ``probe/escape.c``, built
statically into an image of its own, calls the syscalls escapes start with directly.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from roost.images.build import build_image, push
from roost.images.local_registry import LocalRegistry
from tests.fixtures.platform import RoostServer
from tests.fixtures.registry import run_async
from tests.integration.platform.helpers import destroy, new_app, run

pytestmark = pytest.mark.root

PROBE = Path(__file__).parent / "probe/escape.c"
EPERM = "1"


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


@pytest.fixture(scope="module")
def probe_image(local_registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the escape probe")
    work = tmp_path_factory.mktemp("probe")
    binary = work / "escape"
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(binary), str(PROBE)], check=True, capture_output=True
    )
    ref = f"{local_registry.addr}/roost-test/escape:latest"

    async def build() -> None:
        layout = await build_image(work / "image", files={"/escape": binary}, cmd=["/escape"])
        await push(layout, "latest", ref)

    run_async(build())
    return ref


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


def test_the_syscalls_escapes_start_with_fail_with_eperm(
    roost: RoostServer, probe_image: str
) -> None:
    c = roost.client()
    app = new_app(c, "probe")
    m = run(c, app, {"image": probe_image, "init": {"exec": ["/bin/sleep", "3600"]}})
    r = c.post(f"/v1/apps/{app}/machines/{m['id']}/exec", json={"command": ["/escape"]})
    assert r.status_code == 200, r.text
    results = dict(line.split() for line in r.json()["stdout"].splitlines())
    assert set(results) >= {"keyctl", "bpf", "perf_event_open", "unshare_user", "mount"}
    assert all(errno == EPERM for errno in results.values()), results
    destroy(c, app, m["id"])
    c.close()
