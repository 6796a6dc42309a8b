"""OCI runtime config (``config.json``) for one machine start: pure functions, no I/O."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from roost.runtime.base import LaunchSpec, Resources
from roost.spec.config import SHARED_CPUS_PER_CORE

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

NOFILE_LIMIT = 65536
INIT_PATH = "/.roost/init"
CPU_PERIOD_US = 100_000
CPU_SHARES_PER_CPU = 1024
"""A performance vCPU's weight; a shared one weighs 1/SHARED_CPUS_PER_CORE of it."""

# Those of `runc spec`, which match Docker's.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_BASE_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
)


def process_env(env: dict[str, str]) -> list[str]:
    """``KEY=VALUE`` list; a default ``PATH`` when the image and config set none."""
    merged = {"PATH": DEFAULT_PATH, **env}
    return [f"{k}={v}" for k, v in merged.items()]


def cpu_shares(res: Resources) -> int:
    """Under contention a performance vCPU gets its whole core and shared vCPUs split
    what is left; idle, either may use up to its quota (one core per vCPU)."""
    if res.cpu_kind == "performance":
        return CPU_SHARES_PER_CPU * res.cpus
    return max(2, CPU_SHARES_PER_CPU * res.cpus // SHARED_CPUS_PER_CORE)


def build_config(
    spec: LaunchSpec,
    *,
    root_path: Path,
    cgroups_path: str,
    hosts_path: Path,
    resolv_path: Path,
    nofile: int = NOFILE_LIMIT,
    init: Path | None = None,
    seccomp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The runc ``config.json`` for ``spec``.

    ``root_path`` is the writable (overlay) rootfs; ``hosts_path``/``resolv_path`` are
    host files bind-mounted over ``/etc/hosts`` and ``/etc/resolv.conf`` (bind mounts,
    not writes into the rootfs, so image symlinks there are never followed on the host).
    ``nofile`` is the open-files limit (soft = hard). ``init`` is a static init binary
    (tini) mounted read-only as PID 1 in front of the command: the kernel drops signals
    to a PID 1 that installed no handler, so without it a machine's process would ignore
    the stop signal and every stop would wait for SIGKILL. ``seccomp`` is the syscall
    filter (``runtime.seccomp``).
    """
    res = spec.resources
    memory = res.memory_mb * 1024 * 1024
    caps = list(DEFAULT_CAPABILITIES)
    netns: dict[str, str] = {"type": "network"}
    if spec.netns is not None:
        netns["path"] = str(spec.netns)
    mounts = [dict(m) for m in _BASE_MOUNTS]
    mounts.append(_bind(hosts_path, "/etc/hosts", False))
    mounts.append(_bind(resolv_path, "/etc/resolv.conf", False))
    mounts += [_bind(m.source, m.destination, m.read_only) for m in spec.mounts]
    args = list(spec.process.argv)
    if init is not None:
        mounts.append(_bind(init, INIT_PATH, True))
        args = [INIT_PATH, "--", *args]
    linux: dict[str, Any] = {
        "cgroupsPath": cgroups_path,
        "resources": {
            "devices": [{"allow": False, "access": "rwm"}],
            "memory": {"limit": memory, "swap": memory},
            "cpu": {
                "shares": cpu_shares(res),
                "quota": CPU_PERIOD_US * res.cpus,
                "period": CPU_PERIOD_US,
            },
            "pids": {"limit": res.pids_limit},
        },
        "namespaces": [
            {"type": "pid"},
            netns,
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if seccomp is not None:
        linux["seccomp"] = seccomp
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": spec.process.uid, "gid": spec.process.gid},
            "args": args,
            "env": process_env(spec.process.env),
            "cwd": spec.process.cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(root_path), "readonly": False},
        "hostname": hostname(spec),
        "mounts": mounts,
        "linux": linux,
    }


def _bind(source: Path, destination: str, read_only: bool) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", "rprivate", "ro" if read_only else "rw"],
    }


def hostname(spec: LaunchSpec) -> str:
    return spec.hostname or spec.machine_id


def hosts_file(spec: LaunchSpec) -> str:
    """``/etc/hosts``: loopback names, the hostname unless an extra entry names it."""
    name = hostname(spec)
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    if not any(name in names.split() for _, names in spec.extra_hosts):
        lines.append(f"127.0.1.1\t{name}")
    lines += [f"{addr}\t{names}" for addr, names in spec.extra_hosts]
    return "\n".join(lines) + "\n"


def resolv_conf(spec: LaunchSpec, host_resolv_conf: str) -> str:
    """``/etc/resolv.conf``: ``spec.dns_servers``, else the host's minus loopback servers.

    Loopback resolvers (systemd-resolved's 127.0.0.53) are unreachable from a machine's
    network namespace, as in Docker.
    """
    if spec.dns_servers:
        return "".join(f"nameserver {s}\n" for s in spec.dns_servers)
    lines = []
    for line in host_resolv_conf.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and (len(words) < 2 or _is_loopback(words[1])):
            continue
        lines.append(" ".join(words))
    return "".join(f"{line}\n" for line in lines)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
