"""Config fields roost accepts, as Fly does, but does not act on (yet), and keys that
are not Fly's at all.

Fly's clients send whole configs, so refusing these would break them; keeping quiet
about them would let a user believe, say, that a schedule runs. ``unhonoured`` names
every such field a config sets, and ``unknown`` every key Fly would drop (as roost
does), by dotted path, so the API can record them on the machine (an event) for the
user to see.
"""

from __future__ import annotations

from pydantic import BaseModel

from roost.spec.config import MachineConfig, WireModel

TOP_LEVEL = (
    "schedule",
    "files",
    "dns",
    "metrics",
    "statics",
    "rootfs",
    "cache_drive",
    "spot",
    "containers",
    "volumes",
    "disable_machine_autostart",
)
INIT = ("tty", "swap_size_mb", "kernel_args")
GUEST = (
    "max_memory_mb",
    "gpus",
    "gpu_kind",
    "host_dedication_id",
    "kernel_args",
    "persist_rootfs",
    "required_host_features",
)
PROCESS = ("secrets", "ignore_app_secrets")
SERVICE = ("force_instance_key", "force_instance_description")
PORT = ("http_options", "tls_options", "proxy_proto_options")
PORT_HANDLERS = ("pg_tls", "proxy_proto")
MOUNT = (
    "encrypted",
    "extend_threshold_percent",
    "add_size_gb",
    "add_size_percent",
    "min_add_size_gb",
    "size_gb_limit",
)


def unhonoured(config: MachineConfig) -> list[str]:
    out = _set(config, TOP_LEVEL, "")
    out += _set(config.init, INIT, "init.")
    if config.guest is not None:
        out += _set(config.guest, GUEST, "guest.")
    for i, process in enumerate(config.processes or []):
        out += _set(process, PROCESS, f"processes[{i}].")
    for i, service in enumerate(config.services or []):
        where = f"services[{i}]."
        if service.protocol == "udp":
            out.append(f"{where}protocol=udp")
        out += _set(service, SERVICE, where)
        for j, port in enumerate(service.ports or []):
            out += _set(port, PORT, f"{where}ports[{j}].")
            out += [
                f"{where}ports[{j}].handlers={h}" for h in port.handlers or [] if h in PORT_HANDLERS
            ]
    for i, mount in enumerate(config.mounts or []):
        out += _set(mount, MOUNT, f"mounts[{i}].")
    return out


def unknown(model: WireModel, prefix: str = "") -> list[str]:
    out = [f"{prefix}{key}" for key in model.unknown]
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, WireModel):
            out += unknown(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, WireModel):
                    out += unknown(item, f"{prefix}{name}[{i}].")
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, WireModel):
                    out += unknown(item, f"{prefix}{name}.{key}.")
    return out


def _set(model: BaseModel, names: tuple[str, ...], prefix: str) -> list[str]:
    # ``False`` and empty values ask for nothing, so nothing is ignored.
    return [f"{prefix}{name}" for name in names if getattr(model, name, None)]


def describe(config: MachineConfig) -> str:
    """One sentence for the user; empty when roost takes the whole config."""
    parts = []
    if kept := unhonoured(config):
        parts.append(f"roost does not act on {', '.join(kept)} yet (kept, without effect)")
    if dropped := unknown(config):
        parts.append(f"{', '.join(dropped)} are not Machines API fields (dropped)")
    return "; ".join(parts)
