"""The syscall filter every machine runs under, as the OCI ``linux.seccomp`` section.

The allow-list is the Docker-derived default profile that Debian ships with
containers-common (Podman's, ``/usr/share/containers/seccomp.json``): every syscall it
does not name fails, and its entries apply by architecture and by the capabilities a
machine has (Docker's ``includes``/``excludes``), resolved here for the host's
architecture and the machine's capability set.

Podman's list is Docker's with one difference that matters here: it lets a process
without CAP_SYS_ADMIN call the mount family, ``unshare``/``setns``, namespace-creating
``clone`` and the kernel keyring, which rootless Podman needs inside user namespaces.
A machine is never that, and a user namespace is the first step of most container
escapes (it grants every capability inside it), so those follow Docker's rule: only
with CAP_SYS_ADMIN, which machines do not have; otherwise EPERM. ``clone3`` answers
ENOSYS, as in Docker, so C libraries fall back to ``clone`` and its flag check.

Blocked, in short (without CAP_SYS_ADMIN): the mount API (mount, umount2, fsopen,
fsmount, move_mount, open_tree, ...), unshare, setns, clone with CLONE_NEW* flags,
pivot_root, keyctl/add_key/request_key, bpf, perf_event_open, fanotify_init,
name_to_handle_at/open_by_handle_at, quotactl, sethostname/setdomainname, syslog; and
always: kexec, kernel modules, reboot, swapon/swapoff, acct, userfaultfd, settimeofday
and clock_settime, iopl/ioperm, and every syscall the profile does not list.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROFILE_PATH = Path("/usr/share/containers/seccomp.json")

EPERM = 1
ENOSYS = 38
CLONE_NAMESPACES = 0x7E020000
"""CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
CLONE_NEWPID | CLONE_NEWNET."""

ADMIN_ONLY = frozenset(
    {
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "mount",
        "mount_setattr",
        "move_mount",
        "name_to_handle_at",
        "open_tree",
        "pivot_root",
        "quotactl_fd",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    }
)
"""Allowed by Podman's profile to anyone, by Docker's only with CAP_SYS_ADMIN."""
NEVER = frozenset({"add_key", "keyctl", "request_key"})
"""Not in Docker's allow-list at all: the keyrings are not namespaced."""

_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "ppc64le": "ppc64le"}
_SCMP_ARCH = {
    "x86_64": "SCMP_ARCH_X86_64",
    "aarch64": "SCMP_ARCH_AARCH64",
    "i686": "SCMP_ARCH_X86",
    "ppc64le": "SCMP_ARCH_PPC64LE",
}


class ProfileError(Exception):
    """The seccomp profile is missing or not one this module reads."""


def load_profile(path: Path = PROFILE_PATH) -> dict[str, Any]:
    try:
        profile: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(
            f"no seccomp profile at {path}: install Debian's golang-github-containers-common "
            "(./scripts/install does)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read the seccomp profile {path}: {exc}") from None
    if profile.get("defaultAction") not in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS"):
        raise ProfileError(f"{path} allows what it does not list; roost needs an allow-list")
    return profile


def oci_seccomp(
    profile: dict[str, Any],
    capabilities: Iterable[str],
    *,
    machine: str | None = None,
    kernel: str | None = None,
) -> dict[str, Any]:
    """The OCI section for a machine with ``capabilities``, on this host's architecture
    (``machine``, as ``uname -m`` says) and kernel."""
    caps = frozenset(capabilities)
    machine = machine or platform.machine()
    kernel_version = _version(kernel or platform.release())
    native = _SCMP_ARCH.get(machine)
    if native is None:
        raise ProfileError(f"no seccomp architecture known for {machine}")
    architectures = [native]
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            architectures += entry.get("subArchitectures") or []
    arch = _GO_ARCH.get(machine, machine)
    admin = "CAP_SYS_ADMIN" in caps
    syscalls = []
    for entry in profile.get("syscalls") or []:
        if not _applies(entry, caps, arch, kernel_version):
            continue
        names = list(entry["names"])
        if entry["action"] == "SCMP_ACT_ALLOW":
            names = [n for n in names if n not in NEVER and (admin or n not in ADMIN_ONLY)]
            if not admin and "clone" in names and not entry.get("args"):
                names.remove("clone")
            if not admin and "clone3" in names:
                names.remove("clone3")
        if not names:
            continue
        rule: dict[str, Any] = {"names": names, "action": entry["action"]}
        if entry.get("args"):
            rule["args"] = [_arg(a) for a in entry["args"]]
        if entry.get("errnoRet") is not None:
            rule["errnoRet"] = entry["errnoRet"]
        syscalls.append(rule)
    refused = {n for rule in syscalls if rule["action"] != "SCMP_ACT_ALLOW" for n in rule["names"]}
    blocked = sorted((NEVER | (frozenset() if admin else ADMIN_ONLY)) - refused)
    if blocked:
        syscalls.append({"names": blocked, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM})
    if not admin:
        syscalls.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {
                        "index": 1 if machine.startswith("s390") else 0,
                        "value": CLONE_NAMESPACES,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            }
        )
        # libseccomp refuses a rule that repeats the default action.
        if profile.get("defaultErrnoRet") != ENOSYS:
            syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    out: dict[str, Any] = {
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    }
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return out


def _applies(
    entry: dict[str, Any], caps: frozenset[str], arch: str, kernel: tuple[int, ...]
) -> bool:
    includes = entry.get("includes") or {}
    excludes = entry.get("excludes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if includes.get("minKernel") and kernel < _version(includes["minKernel"]):
        return False
    if arch in (excludes.get("arches") or []):
        return False
    return not (caps & set(excludes.get("caps") or []))


def _arg(arg: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": arg["index"],
        "value": arg["value"],
        "valueTwo": arg.get("valueTwo", 0),
        "op": arg["op"],
    }


def _version(release: str) -> tuple[int, ...]:
    parts = []
    for piece in release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
