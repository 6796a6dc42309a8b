"""Path lookups inside an image's rootfs, resolving symlinks as the machine would see
them (an absolute link points into the rootfs, never at the host)."""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

MAX_LINKS = 40


def resolve(rootfs: Path, path: str) -> Path | None:
    """The host path of ``path`` inside ``rootfs`` after every symlink, or None."""
    pending = [p for p in path.split("/") if p]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = rootfs.joinpath(*done, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_LINKS:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        done.append(part)
    return rootfs.joinpath(*done)


def find_executable(rootfs: Path, name: str, search_path: str, cwd: str = "/") -> str | None:
    """Where ``name`` would be found by exec in the machine (PATH lookup for bare names)."""
    if "/" in name:
        candidates = [name if name.startswith("/") else posixpath.join(cwd, name)]
    else:
        candidates = [posixpath.join(d or ".", name) for d in search_path.split(":")]
    for candidate in candidates:
        host = resolve(rootfs, candidate)
        if host is not None and host.is_file() and os.stat(host).st_mode & 0o111:
            return candidate
    return None
