"""Turn a machine's config and its image into the driver's LaunchSpec.

The command follows Fly's init: ``exec`` replaces everything; otherwise ``entrypoint``
and ``cmd`` override the image's ENTRYPOINT and CMD (and, as with Docker, a new
entrypoint drops the image's CMD). A ``processes`` entry that names a command replaces
``init``'s; roost runs one process per machine. The environment is the image's, then
the config's, then the process's (``env``, then ``env_from``), then the platform's own
variables, which apps on the platform expect and must not be able to spoof.
"""

from __future__ import annotations

from pathlib import Path

from roost.images.base import Image
from roost.runtime.base import LaunchSpec, Mount, ProcessSpec, Resources
from roost.spec.config import MachineConfig, MachineInit, MachineProcess
from roost.store.records import MachineRecord

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LaunchError(Exception):
    """The config and image do not describe a runnable process."""


def process(config: MachineConfig) -> MachineProcess | None:
    processes = config.processes or []
    if len(processes) > 1:
        raise LaunchError(
            f"config.processes lists {len(processes)} processes; roost runs one process per "
            "machine: run the others in machines of their own"
        )
    return processes[0] if processes else None


def command(config: MachineConfig, image: Image) -> list[str]:
    init: MachineInit | MachineProcess = config.init
    chosen = process(config)
    if chosen is not None and (chosen.exec or chosen.entrypoint or chosen.cmd):
        init = chosen
    if init.exec:
        return list(init.exec)
    entrypoint = init.entrypoint if init.entrypoint is not None else image.config.entrypoint
    if init.cmd is not None:
        cmd = init.cmd
    elif init.entrypoint is not None:
        cmd = []
    else:
        cmd = image.config.cmd
    argv = [*entrypoint, *cmd]
    if not argv:
        raise LaunchError(
            f"image {image.ref} has no ENTRYPOINT or CMD; set config.init.cmd or init.exec"
        )
    return argv


def environment(
    record: MachineRecord, config: MachineConfig, image: Image, primary_region: str = ""
) -> dict[str, str]:
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    for item in image.config.env:
        key, _, value = item.partition("=")
        if key:
            env[key] = value
    env.update(config.env or {})
    chosen = process(config)
    if chosen is not None:
        env.update(chosen.env or {})
        fields = {
            "id": record.id,
            "version": record.version,
            "app_name": record.app,
            "private_ip": record.private_ip,
            "region": record.region,
            "image": str(image.ref),
        }
        env.update({item.env_var: fields[item.field_ref] for item in chosen.env_from or []})
    guest = config.resolved_guest
    metadata = config.metadata or {}
    platform = {
        "FLY_APP_NAME": record.app,
        "FLY_MACHINE_ID": record.id,
        "FLY_ALLOC_ID": record.id,
        "FLY_REGION": record.region,
        "FLY_IMAGE_REF": str(image.ref),
        "FLY_MACHINE_VERSION": record.version,
        "FLY_PRIVATE_IP": record.private_ip,
        "FLY_PROCESS_GROUP": metadata.get("fly_process_group", "app"),
        "FLY_VM_MEMORY_MB": str(guest.memory_mb),
        "ROOST_APP_NAME": record.app,
        "ROOST_MACHINE_ID": record.id,
        "ROOST_REGION": record.region,
        "ROOST_PRIVATE_IP": record.private_ip,
        "ROOST_PRIVATE_IPV4": record.ipv4,
    }
    env.update(platform)
    if primary_region and "PRIMARY_REGION" not in env:
        env["PRIMARY_REGION"] = primary_region
    return env


def user_ids(rootfs: Path, user: str) -> tuple[int, int]:
    """``uid[:gid]`` or names looked up in the image's /etc/passwd and /etc/group."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    passwd = _entries(rootfs / "etc/passwd")
    if name.isdigit():
        uid = int(name)
        gid = next((int(e[3]) for e in passwd if e[2] == name and e[3].isdigit()), 0)
    else:
        entry = next((e for e in passwd if e[0] == name), None)
        if entry is None or not entry[3].isdigit():
            raise LaunchError(f"user {name!r} is not defined in the image's /etc/passwd")
        uid, gid = int(entry[2]), int(entry[3])
    if group.isdigit():
        gid = int(group)
    elif group:
        found = next((e for e in _entries(rootfs / "etc/group") if e[0] == group), None)
        if found is None:
            raise LaunchError(f"group {group!r} is not defined in the image's /etc/group")
        gid = int(found[2])
    return uid, gid


def _entries(path: Path) -> list[list[str]]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    entries = [line.split(":") for line in lines]
    # passwd lines have uid and gid in fields 2 and 3, group lines have the gid in 2.
    return [e for e in entries if len(e) >= 4 and e[2].isdigit()]


def launch_spec(
    record: MachineRecord,
    config: MachineConfig,
    image: Image,
    *,
    netns: Path | None,
    primary_region: str = "",
    mounts: tuple[Mount, ...] = (),
) -> LaunchSpec:
    chosen = process(config)
    uid, gid = user_ids(image.rootfs, (chosen.user if chosen else None) or image.config.user)
    guest = config.resolved_guest
    return LaunchSpec(
        machine_id=record.id,
        rootfs=image.rootfs,
        process=ProcessSpec(
            argv=command(config, image),
            env=environment(record, config, image, primary_region),
            cwd=image.config.working_dir or "/",
            uid=uid,
            gid=gid,
        ),
        resources=Resources(cpus=guest.cpus, memory_mb=guest.memory_mb, cpu_kind=guest.cpu_kind),
        hostname=record.id,
        netns=netns,
        mounts=mounts,
    )
