"""An app config → one Fly ``MachineConfig`` per process group, as flyctl builds them.

Every group gets the app's image and ``[env]`` (plus ``PRIMARY_REGION``), its command
from ``[processes]``, and the sections whose ``processes`` list names it (or that name
no group at all): ``[http_service]`` becomes a service on ports 80 (http) and 443
(http + tls), ``[[services]]`` and their checks, ``[checks]``, ``[[vm]]`` (a section
naming the group wins over one naming none), ``[[mounts]]`` and ``[[restart]]``.
Mounts carry the volume's *name*; which volume a machine gets is the deploy's choice.
``metadata`` marks the group the way flyctl does, so later deploys can find it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from roost.appconfig.guest import DEFAULT_SIZE, guest
from roost.appconfig.model import (
    VM,
    AppConfig,
    CheckTiming,
    HTTPCheck,
    HTTPService,
    MachineCheck,
    Scaling,
    Service,
    TCPCheck,
)
from roost.spec.config import MachineConfig
from roost.spec.durations import format_duration

DEFAULT_GROUP = "app"
"""The group of an app without ``[processes]``, as on Fly."""
PLATFORM_VERSION = "v2"
HTTP_PORT = 80
HTTPS_PORT = 443


class Grouped(Protocol):
    processes: list[str]


@dataclass(frozen=True)
class GroupConfig:
    name: str
    config: dict[str, Any]
    """The MachineConfig as the wire carries it; ``mounts`` name volumes, not ids."""

    @property
    def has_services(self) -> bool:
        return bool(self.config.get("services"))

    @property
    def has_mounts(self) -> bool:
        return bool(self.config.get("mounts"))

    @property
    def has_checks(self) -> bool:
        return bool(self.config.get("checks")) or any(
            s.get("checks") for s in self.config.get("services") or []
        )


class GroupError(ValueError):
    """A group's sections add up to a config the Machines API would refuse."""


def group_names(app: AppConfig) -> list[str]:
    return list(app.processes) or [DEFAULT_GROUP]


def group_configs(app: AppConfig, image: str) -> list[GroupConfig]:
    return [GroupConfig(name, machine_config(app, name, image)) for name in group_names(app)]


def machine_config(app: AppConfig, group: str, image: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "image": image,
        "init": {"cmd": app.processes[group]} if group in app.processes else {},
        "guest": _guest(app.vm, group),
        "metadata": {"fly_platform_version": PLATFORM_VERSION, "fly_process_group": group},
    }
    env = dict(app.env)
    if app.primary_region:
        env["PRIMARY_REGION"] = app.primary_region
    if env:
        config["env"] = env
    http = app.http_service
    services = [_http_service(http)] if http and _serves(http, group) else []
    services += [_service(s) for s in app.services if _serves(s, group)]
    if services:
        config["services"] = services
    checks = {name: _machine_check(c) for name, c in app.checks.items() if _serves(c, group)}
    if checks:
        config["checks"] = checks
    mounts = [m for m in app.mounts if _serves(m, group)]
    if len(mounts) > 1:
        raise GroupError(f"process group {group!r} has {len(mounts)} mounts; a machine takes one")
    if mounts:
        config["mounts"] = [{"name": mounts[0].source, "path": mounts[0].destination}]
    restart = next((r for r in app.restart if group in r.processes), None) or next(
        (r for r in app.restart if not r.processes), None
    )
    if restart:
        policy = "on-failure" if restart.policy == "on-fail" else restart.policy
        config["restart"] = _present(policy=policy, max_retries=restart.max_retries)
    stop = _present(
        signal=app.kill_signal,
        timeout=format_duration(app.kill_timeout) if app.kill_timeout is not None else None,
    )
    if stop:
        config["stop_config"] = stop
    try:
        # The API's own model has the last word on what a machine config may hold.
        return MachineConfig.model_validate(config).wire()
    except ValidationError as exc:
        raise GroupError(f"process group {group!r}: {exc.errors()[0]['msg']}") from None


def _serves(section: Grouped, group: str) -> bool:
    return not section.processes or group in section.processes


def _guest(vms: Sequence[VM], group: str) -> dict[str, Any]:
    vm = next((v for v in vms if group in v.processes), None) or next(
        (v for v in vms if not v.processes), None
    )
    if vm is None:
        return guest(DEFAULT_SIZE)
    return guest(vm.size, cpus=vm.cpus, cpu_kind=vm.cpu_kind, memory_mb=vm.memory or vm.memory_mb)


def _http_service(section: HTTPService) -> dict[str, Any]:
    http = _present(force_https=section.force_https or None, http_options=section.http_options)
    tls = _present(http_options=section.http_options, tls_options=section.tls_options)
    return {
        "protocol": "tcp",
        "internal_port": section.internal_port,
        "ports": [
            {"port": HTTP_PORT, "handlers": ["http"], **http},
            {"port": HTTPS_PORT, "handlers": ["http", "tls"], **tls},
        ],
        **_scaling(section),
        **_checks([_http_check(c) for c in section.checks]),
    }


def _service(section: Service) -> dict[str, Any]:
    return {
        "protocol": section.protocol,
        "internal_port": section.internal_port,
        "ports": [p.model_dump(exclude_none=True) for p in section.ports],
        **_scaling(section),
        **_checks(
            [_tcp_check(c) for c in section.tcp_checks]
            + [_http_check(c) for c in section.http_checks]
        ),
    }


def _scaling(section: Scaling) -> dict[str, Any]:
    return _present(
        autostop=section.auto_stop_machines,
        autostart=section.auto_start_machines,
        min_machines_running=section.min_machines_running,
        concurrency=section.concurrency.model_dump(exclude_none=True)
        if section.concurrency
        else None,
    )


def _checks(checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"checks": checks} if checks else {}


def _timing(check: CheckTiming) -> dict[str, Any]:
    return _present(
        grace_period=_seconds(check.grace_period),
        interval=_seconds(check.interval),
        timeout=_seconds(check.timeout),
    )


def _tcp_check(check: TCPCheck | MachineCheck) -> dict[str, Any]:
    return {"type": "tcp", **_present(port=check.port), **_timing(check)}


def _http_check(check: HTTPCheck) -> dict[str, Any]:
    return {
        "type": "http",
        **_present(
            port=check.port,
            method=check.method,
            path=check.path,
            protocol=check.protocol,
            tls_skip_verify=check.tls_skip_verify,
            tls_server_name=check.tls_server_name,
            # fly.toml writes headers as a table; the wire as name + values.
            headers=[{"name": k, "values": [v]} for k, v in check.headers.items()] or None,
        ),
        **_timing(check),
    }


def _machine_check(check: MachineCheck) -> dict[str, Any]:
    base = _http_check(check) if check.type == "http" else _tcp_check(check)
    return {**base, **_present(kind=check.kind)}


def _seconds(value: float | None) -> str | None:
    return format_duration(value) if value is not None else None


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
