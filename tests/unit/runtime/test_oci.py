from __future__ import annotations

from pathlib import Path

from roost.runtime.base import LaunchSpec, Mount, ProcessSpec, Resources
from roost.runtime.oci import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH,
    MASKED_PATHS,
    build_config,
    hosts_file,
    resolv_conf,
)
from roost.spec.config import SHARED_CPUS_PER_CORE


def _spec(**kw: object) -> LaunchSpec:
    args: dict[str, object] = {
        "machine_id": "0123456789abcd",
        "rootfs": Path("/images/x/rootfs"),
        "process": ProcessSpec(["httpd", "-f"], {"A": "1"}, cwd="/www", uid=1000, gid=1001),
    }
    args.update(kw)
    return LaunchSpec(**args)  # type: ignore[arg-type]


def _config(spec: LaunchSpec) -> dict:
    return build_config(
        spec,
        root_path=Path("/state/m/rootfs"),
        cgroups_path="/roost/0123456789abcd",
        hosts_path=Path("/state/m/hosts"),
        resolv_path=Path("/state/m/resolv.conf"),
        nofile=4096,
    )


def test_process_section() -> None:
    p = _config(_spec())["process"]
    assert p["args"] == ["httpd", "-f"]
    assert p["env"] == [f"PATH={DEFAULT_PATH}", "A=1"]
    assert p["cwd"] == "/www"
    assert p["user"] == {"uid": 1000, "gid": 1001}
    assert p["terminal"] is False
    assert p["noNewPrivileges"] is True
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]
    caps = p["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted"}
    for kind in caps.values():
        assert kind == list(DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in DEFAULT_CAPABILITIES and len(DEFAULT_CAPABILITIES) == 14


def test_image_path_wins_over_default() -> None:
    spec = _spec(process=ProcessSpec(["sh"], {"PATH": "/opt/bin"}))
    assert _config(spec)["process"]["env"] == ["PATH=/opt/bin"]


def test_root_hostname_and_resources() -> None:
    spec = _spec(resources=Resources(cpus=2, memory_mb=512, cpu_kind="performance", pids_limit=64))
    c = _config(spec)
    assert c["root"] == {"path": "/state/m/rootfs", "readonly": False}
    assert c["hostname"] == "0123456789abcd"
    linux = c["linux"]
    assert linux["cgroupsPath"] == "/roost/0123456789abcd"
    r = linux["resources"]
    assert r["memory"] == {"limit": 512 << 20, "swap": 512 << 20}
    assert r["cpu"] == {"shares": 2048, "quota": 200_000, "period": 100_000}
    assert r["pids"] == {"limit": 64}
    assert r["devices"] == [{"allow": False, "access": "rwm"}]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert "/proc/sys" in linux["readonlyPaths"]
    assert _config(_spec(hostname="web-1"))["hostname"] == "web-1"


def test_shared_cpus_weigh_a_fraction_of_a_core_and_burst_to_one() -> None:
    shared = _config(_spec(resources=Resources(cpus=2, cpu_kind="shared")))["linux"]
    performance = _config(_spec(resources=Resources(cpus=2, cpu_kind="performance")))["linux"]
    cpu, whole = shared["resources"]["cpu"], performance["resources"]["cpu"]
    assert cpu["shares"] * SHARED_CPUS_PER_CORE == whole["shares"]
    assert cpu["quota"] == whole["quota"] == 2 * cpu["period"]


def test_namespaces_join_given_netns_or_make_one() -> None:
    ns = _config(_spec(netns=Path("/run/netns/rst-x")))["linux"]["namespaces"]
    assert {n["type"] for n in ns} == {"pid", "network", "ipc", "uts", "mount"}
    assert {"type": "network", "path": "/run/netns/rst-x"} in ns
    fresh = _config(_spec())["linux"]["namespaces"]
    assert {"type": "network"} in fresh


def test_mounts_defaults_etc_files_and_binds() -> None:
    spec = _spec(mounts=(Mount(Path("/vol/data"), "/data"), Mount(Path("/cfg"), "/cfg", True)))
    mounts = {m["destination"]: m for m in _config(spec)["mounts"]}
    for dest in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"):
        assert dest in mounts
    assert "ro" in mounts["/sys"]["options"]
    assert mounts["/etc/hosts"]["source"] == "/state/m/hosts"
    assert mounts["/etc/resolv.conf"]["source"] == "/state/m/resolv.conf"
    assert mounts["/data"] == {
        "destination": "/data",
        "type": "bind",
        "source": "/vol/data",
        "options": ["rbind", "rprivate", "rw"],
    }
    assert "ro" in mounts["/cfg"]["options"]


def test_hosts_file() -> None:
    text = hosts_file(_spec())
    assert "127.0.0.1\tlocalhost\n" in text
    assert "127.0.1.1\t0123456789abcd\n" in text
    named = hosts_file(_spec(hostname="web", extra_hosts=(("fdaa:0:1::5", "web web.internal"),)))
    assert "127.0.1.1" not in named
    assert named.endswith("fdaa:0:1::5\tweb web.internal\n")


def test_resolv_conf_drops_loopback_servers() -> None:
    host = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\nsearch lan\n"
    assert resolv_conf(_spec(), host) == "nameserver 10.0.0.2\nsearch lan\n"
    assert resolv_conf(_spec(dns_servers=("fdaa::3",)), host) == "nameserver fdaa::3\n"


def test_the_syscall_filter_goes_in_linux() -> None:
    assert "seccomp" not in _config(_spec())["linux"]
    section = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    config = build_config(
        _spec(),
        root_path=Path("/state/m/rootfs"),
        cgroups_path="/roost/0123456789abcd",
        hosts_path=Path("/state/m/hosts"),
        resolv_path=Path("/state/m/resolv.conf"),
        seccomp=section,
    )
    assert config["linux"]["seccomp"] == section
