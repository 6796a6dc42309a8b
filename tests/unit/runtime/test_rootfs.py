"""Executable lookup inside a rootfs never follows links out onto the host."""

from __future__ import annotations

import os
from pathlib import Path

from roost.runtime.rootfs import find_executable, resolve


def make_exe(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_path_lookup_through_absolute_and_directory_links(tmp_path: Path) -> None:
    make_exe(tmp_path / "usr/bin/busybox")
    os.symlink("usr/bin", tmp_path / "bin")
    os.symlink("/usr/bin/busybox", tmp_path / "usr/bin/sh")
    assert find_executable(tmp_path, "sh", "/bin") == "/bin/sh"
    assert find_executable(tmp_path, "/bin/sh", "") == "/bin/sh"
    assert find_executable(tmp_path, "nope", "/bin:/usr/bin") is None


def test_links_stay_inside_the_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    make_exe(tmp_path / "host-only")
    os.symlink(str(tmp_path / "host-only"), root / "escape")
    os.symlink("../../../../host-only", root / "climb")
    assert resolve(root, "/escape") is None
    assert find_executable(root, "/climb", "") is None


def test_non_executable_and_loops(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("x")
    os.symlink("loop", tmp_path / "loop")
    assert find_executable(tmp_path, "/data", "") is None
    assert find_executable(tmp_path, "/loop", "") is None
    make_exe(tmp_path / "app/run")
    assert find_executable(tmp_path, "./run", "", cwd="/app") == "/app/./run"
