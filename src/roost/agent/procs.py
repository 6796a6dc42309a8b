"""The processes of a running machine, read from /proc (Fly's ``ProcessStat`` shape).

Fields: ``pid`` as the machine sees it (its own PID namespace), ``command``,
``directory`` (cwd), ``cpu`` (user + system CPU time, ms), ``rss`` (bytes), ``stime``
(start, unix seconds), ``rtime`` (seconds running), ``listen_sockets`` (TCP sockets it
listens on, ``{proto, address}``).
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_LISTEN = "0A"


def process_stats(pids: list[int]) -> list[dict[str, Any]]:
    boot = _boot_time()
    now = time.time()
    out = []
    for pid in pids:
        try:
            out.append(_stat(pid, boot, now))
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
    return out


def _stat(pid: int, boot: float, now: float) -> dict[str, Any]:
    proc = Path(f"/proc/{pid}")
    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    utime, stime_ticks, start_ticks, rss_pages = (
        int(fields[11]),
        int(fields[12]),
        int(fields[19]),
        int(fields[21]),
    )
    started = boot + start_ticks / _TICKS
    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    try:
        directory = os.readlink(proc / "cwd")
        root = os.readlink(proc / "root")
        if root != "/" and directory.startswith(root):
            directory = directory[len(root) :] or "/"
    except OSError:
        directory = ""
    return {
        "pid": _inner_pid(proc) or pid,
        "command": command,
        "directory": directory,
        "cpu": round((utime + stime_ticks) * 1000 / _TICKS),
        "rss": rss_pages * _PAGE,
        "stime": int(started),
        "rtime": max(0, int(now - started)),
        "listen_sockets": _listening(proc),
    }


def _inner_pid(proc: Path) -> int | None:
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _listening(proc: Path) -> list[dict[str, str]]:
    inodes = set()
    try:
        for fd in (proc / "fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    out = []
    for proto, table in (("tcp", "net/tcp"), ("tcp6", "net/tcp6")):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == _LISTEN and parts[9] in inodes:
                out.append({"proto": proto, "address": _address(parts[1])})
    return out


def _address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ".".join(str(b) for b in raw[::-1])
        return f"{ip}:{int(port, 16)}"
    # /proc prints IPv6 as four little-endian 32-bit words.
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return f"[{ipaddress.IPv6Address(b''.join(words))}]:{int(port, 16)}"


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0
