"""The README's first steps, run exactly as written.

Its commands name the defaults (``127.0.0.1:4280``, ``/var/lib/roost``, the registry on
``127.0.0.1:5000``, the proxy on ``:8080``), so the server runs where those are its own:
in a network namespace of its own (its own loopback, no route anywhere) and a mount
namespace where ``/var/lib/roost`` and ``/run/netns`` are private to it. The README's
shell blocks then run in those same namespaces, unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.platform import CGROUP_ROOT, roost_bin

pytestmark = pytest.mark.root

REPO = Path(__file__).parents[2]
SECTIONS = ("First machine", "Traffic through the proxy")


def readme_blocks(sections: tuple[str, ...] = SECTIONS) -> list[str]:
    """The ``sh`` blocks of the named README sections, in order."""
    text = (REPO / "README.md").read_text()
    parts = re.split(r"^## ", text, flags=re.M)
    blocks = []
    for part in parts:
        title = part.splitlines()[0] if part else ""
        if title in sections:
            blocks += re.findall(r"^```sh\n(.*?)^```", part, flags=re.M | re.S)
    return blocks


@pytest.fixture(scope="module")
def namespaced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A ``roost server`` with its defaults, alone in new net and mount namespaces; the
    pid to enter them through."""
    root = tmp_path_factory.mktemp("readme")
    data = root / "data"
    data.mkdir()
    default_dir = Path("/var/lib/roost")
    made_default = not default_dir.exists()
    default_dir.mkdir(parents=True, exist_ok=True)
    cgroup = f"/roost-readme-{os.getpid()}"
    setup = (
        "set -e; ip link set lo up; mkdir -p /run/netns; "
        "mount -t tmpfs roost-readme /run/netns; "
        f"mount --bind {data} /var/lib/roost; "
        f"exec {roost_bin()} server --cgroup-parent {cgroup}"
    )
    log = root / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", setup],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_for(log, "roost is ready", proc)
        yield proc.pid
    finally:
        _kill_namespace(proc, cgroup)
        if made_default:
            with contextlib.suppress(OSError):
                default_dir.rmdir()


def _wait_for(log: Path, line: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if line in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"roost server exited:\n{text[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"roost server not ready:\n{log.read_text(errors='replace')[-3000:]}")


def _kill_namespace(proc: subprocess.Popen[bytes], cgroup: str) -> None:
    """Every process of the server's network namespace (the server, its shims) and of its
    machines' cgroups; the namespaces go with their last process."""
    try:
        netns = os.stat(f"/proc/{proc.pid}/ns/net").st_ino
    except OSError:
        netns = None
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    victims = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if netns is not None and os.stat(entry / "ns/net").st_ino == netns:
                    victims.add(int(entry.name))
    cgroups = [c / cgroup.lstrip("/") for c in CGROUP_ROOT.iterdir()]
    for parent in (c for c in cgroups if c.is_dir()):
        for procs in parent.rglob("cgroup.procs"):
            victims.update(int(p) for p in procs.read_text().split())
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for parent in (c for c in cgroups if c.is_dir()):
        for child in sorted(
            (p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            _rmdir_soon(child)
        _rmdir_soon(parent)


def _rmdir_soon(path: Path) -> None:
    # A killed process leaves its cgroup a moment after SIGKILL.
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    print(f"cleanup: cannot remove {path}")


def test_the_first_steps_run_as_written(namespaced_server: int) -> None:
    script = "set -euo pipefail\n" + "\n".join(readme_blocks())
    before = sorted(REPO.iterdir())
    ran = subprocess.run(
        [
            "nsenter",
            f"--target={namespaced_server}",
            "--mount",
            "--net",
            f"--wd={REPO}",
            "bash",
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, f"stdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    out = ran.stdout
    # The machine answers on its address, and twice through the proxy (once woken).
    assert out.count("Hello from roost") == 3, out
    assert '"state":"started"' in out and '"state":"destroyed"' in out, out
    assert sorted(REPO.iterdir()) == before, "the steps leave nothing in the checkout"
