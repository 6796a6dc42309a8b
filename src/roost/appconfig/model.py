"""The app config file (``roost.toml``, or a ``fly.toml`` as it is) as pydantic models.

Only the keys roost acts on are modelled; fly.toml has many more, and unknown keys are
ignored. Values are checked strictly (a port is an integer, not ``"8080"``) so mistakes
surface here, named by their key, rather than as a machine that never comes up.

fly.toml's own conventions are accepted: ``[[vm]]`` and ``[[mounts]]`` may also be
single tables; ``[env]`` values may be numbers or booleans; durations are Go strings
(``"10s"``) or, in the old format, integers of milliseconds — except ``kill_timeout``,
whose integers are seconds; commands in ``[processes]`` are shell-split strings.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from roost.appconfig.guest import check_size, parse_memory
from roost.spec.config import parse_autostop
from roost.spec.durations import parse_duration
from roost.spec.signals import STOP_SIGNAL_NAMES, parse_signal, signal_name

STRATEGIES = ("rolling", "immediate", "canary", "bluegreen")


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected a duration like '10s'")
    if isinstance(value, int):
        return value / 1000
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _kill_timeout(value: Any) -> float:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return _duration(value)


def _kill_signal(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a signal name like 'SIGTERM'")
    return signal_name(parse_signal(value, STOP_SIGNAL_NAMES))


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("env values must be strings, numbers or booleans")


def _command(value: Any) -> list[str]:
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a command line (a string) or a list of strings")
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split {value!r}: {exc}") from None
    if not argv:
        raise ValueError("the command is empty")
    return argv


def _table_or_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


Seconds = Annotated[float, BeforeValidator(_duration)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Positive = Annotated[StrictInt, Field(ge=1)]
Processes = list[str]
AutoStop = Annotated[str, BeforeValidator(parse_autostop)]


class FileModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Build(FileModel):
    image: Annotated[str, Field(min_length=1)] | None = None


class Concurrency(FileModel):
    type: Literal["connections", "requests"] = "connections"
    soft_limit: Positive | None = None
    hard_limit: Positive | None = None


class CheckTiming(FileModel):
    grace_period: Seconds | None = None
    interval: Seconds | None = None
    timeout: Seconds | None = None


class HTTPCheck(CheckTiming):
    port: Port | None = None
    method: str | None = None
    path: str | None = None
    protocol: Literal["http", "https"] | None = None
    tls_skip_verify: StrictBool | None = None
    tls_server_name: str | None = None
    headers: dict[str, str] = {}


class TCPCheck(CheckTiming):
    port: Port | None = None


class MachineCheck(HTTPCheck):
    """A ``[checks.NAME]`` entry: a top-level machine check, on its own port."""

    type: Literal["tcp", "http"]
    port: Port
    kind: Literal["informational", "readiness"] | None = None
    processes: Processes = []


class ServicePort(FileModel):
    port: Port | None = None
    start_port: Port | None = None
    end_port: Port | None = None
    handlers: list[Literal["http", "tls", "pg_tls", "proxy_proto"]] = []
    force_https: StrictBool | None = None
    http_options: dict[str, Any] | None = None
    tls_options: dict[str, Any] | None = None
    proxy_proto_options: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_port_or_a_range(self) -> ServicePort:
        if self.port is None and (self.start_port is None or self.end_port is None):
            raise ValueError("give a port, or start_port and end_port")
        return self


class Scaling(FileModel):
    """What the proxy may do with a service's machines."""

    auto_stop_machines: AutoStop | None = None
    auto_start_machines: StrictBool | None = None
    min_machines_running: Annotated[StrictInt, Field(ge=0)] | None = None
    concurrency: Concurrency | None = None
    processes: Processes = []


class HTTPService(Scaling):
    internal_port: Port
    force_https: StrictBool = False
    checks: list[HTTPCheck] = []
    http_options: dict[str, Any] | None = None
    tls_options: dict[str, Any] | None = None


class Service(Scaling):
    internal_port: Port
    protocol: Literal["tcp", "udp"] = "tcp"
    ports: list[ServicePort] = []
    tcp_checks: list[TCPCheck] = []
    http_checks: list[HTTPCheck] = []


class VM(FileModel):
    size: Annotated[str, BeforeValidator(check_size)] | None = None
    memory: Annotated[int, BeforeValidator(parse_memory)] | None = None
    memory_mb: Positive | None = None
    cpus: Positive | None = None
    cpu_kind: Literal["shared", "performance"] | None = None
    processes: Processes = []


class Mount(FileModel):
    source: Annotated[str, Field(min_length=1)]
    destination: str
    processes: Processes = []

    @field_validator("destination")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "/../" in f"{value}/":
            raise ValueError("must be an absolute path (like /data) without '..'")
        return value


class Restart(FileModel):
    policy: Literal["no", "always", "on-failure", "on-fail"]
    max_retries: Annotated[StrictInt, Field(ge=0)] | None = None
    processes: Processes = []


class Deploy(FileModel):
    strategy: Literal["rolling", "immediate", "canary", "bluegreen"] = "rolling"
    wait_timeout: Seconds | None = None


class AppConfig(FileModel):
    app: str | None = None
    primary_region: str | None = None
    kill_signal: Annotated[str, BeforeValidator(_kill_signal)] | None = None
    kill_timeout: Annotated[float, BeforeValidator(_kill_timeout)] | None = None
    build: Build = Build()
    env: dict[str, Annotated[str, BeforeValidator(_env_value)]] = {}
    http_service: HTTPService | None = None
    services: list[Service] = []
    vm: Annotated[list[VM], BeforeValidator(_table_or_list)] = []
    processes: dict[str, Annotated[list[str], BeforeValidator(_command)]] = {}
    checks: dict[str, MachineCheck] = {}
    mounts: Annotated[list[Mount], BeforeValidator(_table_or_list)] = []
    restart: Annotated[list[Restart], BeforeValidator(_table_or_list)] = []
    deploy: Deploy = Deploy()

    @model_validator(mode="after")
    def _known_process_groups(self) -> AppConfig:
        # A typo in a processes list would silently leave a group without its service.
        if not self.processes:
            return self
        for key, listed in self._process_lists():
            unknown = [name for name in listed if name not in self.processes]
            if unknown:
                raise ValueError(
                    f"{key}.processes names {unknown[0]!r}, which is not in [processes] "
                    f"(groups: {', '.join(self.processes)})"
                )
        return self

    def _process_lists(self) -> list[tuple[str, list[str]]]:
        out = [("http_service", self.http_service.processes)] if self.http_service else []
        out += [(f"services[{i}]", s.processes) for i, s in enumerate(self.services)]
        out += [(f"vm[{i}]", v.processes) for i, v in enumerate(self.vm)]
        out += [(f"checks.{name}", c.processes) for name, c in self.checks.items()]
        out += [(f"mounts[{i}]", m.processes) for i, m in enumerate(self.mounts)]
        out += [(f"restart[{i}]", r.processes) for i, r in enumerate(self.restart)]
        return out
