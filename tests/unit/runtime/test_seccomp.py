"""The seccomp profile as OCI config: entries resolved by architecture and capability,
and Docker's rule for what only CAP_SYS_ADMIN may call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roost.runtime.seccomp import (
    ENOSYS,
    EPERM,
    ProfileError,
    load_profile,
    oci_seccomp,
)

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": EPERM,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {
            "names": ["read", "write", "clone", "clone3", "mount", "keyctl"],
            "action": "SCMP_ACT_ALLOW",
        },
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
        {
            "names": ["chroot"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "excludes": {"caps": ["CAP_SYS_CHROOT"]},
        },
        {"names": ["new_one"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.0"}},
    ],
}


def rules(out: dict, action: str = "SCMP_ACT_ALLOW") -> set[str]:
    return {n for r in out["syscalls"] if r["action"] == action for n in r["names"]}


def test_entries_follow_the_architecture_and_capabilities() -> None:
    out = oci_seccomp(PROFILE, ["CAP_SYS_CHROOT"], machine="x86_64", kernel="6.1.0-13-amd64")
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert out["defaultAction"] == "SCMP_ACT_ERRNO" and out["defaultErrnoRet"] == EPERM
    assert {"read", "write", "arch_prctl", "chroot"} <= rules(out)
    assert "new_one" not in rules(out), "needs a newer kernel"
    arm = oci_seccomp(PROFILE, [], machine="aarch64", kernel="6.1.0")
    assert "arch_prctl" not in rules(arm) and "chroot" in rules(arm, "SCMP_ACT_ERRNO")


def test_without_sys_admin_namespaces_mounts_and_keyrings_are_refused() -> None:
    out = oci_seccomp(PROFILE, [], machine="x86_64", kernel="6.1.0")
    refused = {n for r in out["syscalls"] if r.get("errnoRet") == EPERM for n in r["names"]}
    assert {"mount", "keyctl", "unshare", "setns"} <= refused
    assert not {"mount", "keyctl"} & {
        n for r in out["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]
    }
    (clone,) = [r for r in out["syscalls"] if r["names"] == ["clone"]]
    assert clone["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" and clone["args"][0]["valueTwo"] == 0
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS} in out["syscalls"]


def test_with_sys_admin_they_are_allowed() -> None:
    out = oci_seccomp(PROFILE, ["CAP_SYS_ADMIN"], machine="x86_64", kernel="6.1.0")
    assert {"mount", "clone", "clone3"} <= rules(out)
    assert "keyctl" not in rules(out), "never: the keyrings are not namespaced"


def test_a_missing_or_permissive_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="containers-common"):
        load_profile(tmp_path / "nope.json")
    permissive = tmp_path / "allow.json"
    permissive.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}))
    with pytest.raises(ProfileError, match="allow-list"):
        load_profile(permissive)
