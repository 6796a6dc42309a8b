"""Command-line flags → a Fly ``MachineConfig`` (as a plain JSON dict).

``--port`` follows flyctl's ``port[:machinePort][/protocol[:handler...]]``:
``--port 443:8080/tcp:tls:http``, ``--port 5432/tcp`` (raw TCP, no handlers),
``--port 8000-8010:8000/tcp``. Two shorthands of our own: a bare ``--port 8080``
means an HTTP service on 8080, and handlers may follow the ports directly
(``--port 443:8080:tls:http``). Ports sharing an internal port and protocol become
one service, as ``[[services.ports]]`` do in fly.toml.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import click

PORT_SYNTAX = "PORT[:INTERNAL][/PROTO[:HANDLER...]]"
HANDLERS = ("http", "tls", "pg_tls", "proxy_proto")
PROTOCOLS = ("tcp", "udp")
RESTART_POLICIES = ("no", "always", "on-failure", "on-fail")
DEFAULT_HANDLERS = ("http",)


@dataclass(frozen=True)
class PortSpec:
    internal_port: int
    protocol: str = "tcp"
    port: int | None = None
    start_port: int | None = None
    end_port: int | None = None
    handlers: tuple[str, ...] = ()

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.port is not None:
            out["port"] = self.port
        else:
            out["start_port"] = self.start_port
            out["end_port"] = self.end_port
        out["handlers"] = list(self.handlers)
        return out


@dataclass(frozen=True)
class GuestFlags:
    memory_mb: int | None = None
    cpus: int | None = None
    cpu_kind: str | None = None

    def given(self) -> bool:
        return any(v is not None for v in (self.memory_mb, self.cpus, self.cpu_kind))

    def apply(self, guest: dict[str, Any] | None) -> dict[str, Any]:
        """``guest`` with the given flags applied over it (or over Fly's defaults)."""
        out: dict[str, Any] = {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256, **(guest or {})}
        for key, value in (
            ("memory_mb", self.memory_mb),
            ("cpus", self.cpus),
            ("cpu_kind", self.cpu_kind),
        ):
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class RunFlags:
    """Everything ``machine run`` puts into the config, already parsed."""

    image: str
    cmd: Sequence[str] = ()
    entrypoint: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    ports: Sequence[PortSpec] = ()
    guest: GuestFlags = GuestFlags()
    restart: str | None = None
    auto_destroy: bool = False
    service: dict[str, Any] = field(default_factory=dict)
    """Proxy settings applied to every service: autostop, autostart, concurrency, ..."""
    mounts: Sequence[dict[str, str]] = ()


def service_settings(
    autostop: str | None,
    autostart: bool | None,
    min_machines_running: int | None,
    soft_limit: int | None,
    hard_limit: int | None,
    concurrency_type: str | None,
) -> dict[str, Any]:
    """The ``--autostop``-style flags as service fields (only those given)."""
    out: dict[str, Any] = {}
    if autostop is not None:
        out["autostop"] = autostop
    if autostart is not None:
        out["autostart"] = autostart
    if min_machines_running is not None:
        out["min_machines_running"] = min_machines_running
    concurrency = {
        k: v
        for k, v in (
            ("type", concurrency_type),
            ("soft_limit", soft_limit),
            ("hard_limit", hard_limit),
        )
        if v is not None
    }
    if concurrency:
        out["concurrency"] = concurrency
    return out


def volume_option(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> list[dict[str, str]]:
    """``-v vol_123:/data`` → ``{"volume": "vol_123", "path": "/data"}``."""
    mounts = []
    for value in values:
        volume, sep, path = value.partition(":")
        if not sep or not volume or not path.startswith("/"):
            raise click.BadParameter(f"{value!r}: use VOLUME_ID:/absolute/path", ctx, param)
        mounts.append({"volume": volume, "path": path})
    return mounts


def run_config(flags: RunFlags) -> dict[str, Any]:
    config: dict[str, Any] = {"image": flags.image, "init": {}}
    if flags.cmd:
        config["init"]["cmd"] = list(flags.cmd)
    if flags.entrypoint:
        config["init"]["entrypoint"] = list(flags.entrypoint)
    if flags.env:
        config["env"] = dict(flags.env)
    if flags.metadata:
        config["metadata"] = dict(flags.metadata)
    if flags.ports:
        config["services"] = [{**s, **flags.service} for s in services(flags.ports)]
    if flags.guest.given():
        config["guest"] = flags.guest.apply(None)
    if flags.mounts:
        config["mounts"] = [dict(m) for m in flags.mounts]
    # fly m run's defaults: machines are kept running, unless they remove themselves.
    policy = flags.restart or ("no" if flags.auto_destroy else "always")
    config["restart"] = {"policy": "on-failure" if policy == "on-fail" else policy}
    if flags.auto_destroy:
        config["auto_destroy"] = True
    return config


def updated_config(
    config: dict[str, Any],
    *,
    image: str | None = None,
    guest: GuestFlags = GuestFlags(),
    env: dict[str, str] | None = None,
    cmd: Sequence[str] = (),
) -> dict[str, Any]:
    """A copy of ``config`` with the ``machine update`` flags applied."""
    out = copy.deepcopy(config)
    if image:
        out["image"] = image
    if guest.given():
        out["guest"] = guest.apply(out.get("guest"))
    if env:
        out["env"] = {**(out.get("env") or {}), **env}
    if cmd:
        out["init"] = {**(out.get("init") or {}), "cmd": list(cmd)}
    return out


def pinned_image(machine: dict[str, Any]) -> str:
    """The exact image a machine runs (tag and digest), else its configured image."""
    ref = machine.get("image_ref") or {}
    image: str = (machine.get("config") or {}).get("image", "")
    if not (ref.get("repository") and ref.get("digest")):
        return image
    base = f"{ref['registry']}/{ref['repository']}" if ref.get("registry") else ref["repository"]
    if ref.get("tag"):
        base += f":{ref['tag']}"
    return f"{base}@{ref['digest']}"


def services(ports: Sequence[PortSpec]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, int], list[PortSpec]] = {}
    for spec in ports:
        grouped.setdefault((spec.protocol, spec.internal_port), []).append(spec)
    return [
        {
            "protocol": protocol,
            "internal_port": internal,
            "ports": [spec.wire() for spec in specs],
        }
        for (protocol, internal), specs in grouped.items()
    ]


def parse_port(text: str) -> PortSpec:
    """One ``--port`` value; raises ValueError with a message naming the problem."""
    ports_part, slash, proto_part = text.strip().partition("/")
    tokens = ports_part.split(":")
    if not (tokens[0].isdigit() or _is_range(tokens[0])):
        raise ValueError(f"invalid port {text!r}: expected {PORT_SYNTAX}")
    numeric = tokens[:2] if len(tokens) > 1 and tokens[1].isdigit() else tokens[:1]
    handlers = [t.lower() for t in tokens[len(numeric) :]]
    if slash:
        if handlers:
            raise ValueError(f"invalid port {text!r}: give handlers after the protocol")
        protocol, *handlers = [t.lower() for t in proto_part.split(":")]
    else:
        protocol = "tcp"
        handlers = handlers or list(DEFAULT_HANDLERS)
    if protocol not in PROTOCOLS:
        raise ValueError(f"invalid protocol {protocol!r} in {text!r}: use tcp or udp")
    unknown = [h for h in handlers if h not in HANDLERS]
    if unknown:
        raise ValueError(
            f"unknown handler {unknown[0]!r} in {text!r}: use any of {', '.join(HANDLERS)}"
        )
    if protocol == "udp" and handlers:
        raise ValueError(f"invalid port {text!r}: udp services take no handlers")
    edge = numeric[0]
    internal = _port(numeric[1], text) if len(numeric) > 1 else None
    if _is_range(edge):
        start, end = (_port(p, text) for p in edge.split("-"))
        if start > end or internal is None:
            raise ValueError(f"invalid port range in {text!r}: use START-END:INTERNAL")
        return PortSpec(internal, protocol, None, start, end, tuple(handlers))
    port = _port(edge, text)
    return PortSpec(internal or port, protocol, port, None, None, tuple(handlers))


def parse_kv(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"invalid {flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def parse_command(text: str | None) -> list[str]:
    """A command line given as one string (``--entrypoint "sh -c"``), split like a shell."""
    if not text:
        return []
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r}: {exc}") from None


# -- click callbacks: turn the raw option values into the parsed forms above --------------


def port_option(_: click.Context, __: click.Parameter, values: Sequence[str]) -> list[PortSpec]:
    try:
        return [parse_port(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def kv_option(_: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    try:
        return parse_kv(values, f"--{param.name}")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def command_option(_: click.Context, __: click.Parameter, value: str | None) -> list[str]:
    try:
        return parse_command(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _is_range(token: str) -> bool:
    start, sep, end = token.partition("-")
    return bool(sep) and start.isdigit() and end.isdigit()


def _port(token: str, text: str) -> int:
    number = int(token)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} in {text!r} is out of range (1-65535)")
    return number
