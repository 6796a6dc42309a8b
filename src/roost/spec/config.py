"""The machine config (``fly.MachineConfig``) and its parts, as the wire carries them.

Unknown keys are ignored, wrong types are rejected with the field named, and values
come out the way fly-go writes them: durations as Go strings (``"10s"``), ``autostop``
as ``false``/``true``/``"suspend"``, absent optionals omitted. The store keeps the
dumped form, so the agent re-reads configs through these same models.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PrivateAttr,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from roost.spec.durations import format_duration, parse_duration
from roost.spec.signals import STOP_SIGNAL_NAMES, parse_signal, signal_name

MIN_MEMORY_MB = 64
MAX_MEMORY_MB = 65536
MAX_CPUS = 64

# Fly's preset names; shared presets give 256 MB per CPU, performance 2048 MB.
SIZE_PRESETS: dict[str, tuple[str, int, int]] = {
    **{f"shared-cpu-{n}x": ("shared", n, n * 256) for n in (1, 2, 4, 8)},
    **{f"performance-{n}x": ("performance", n, n * 2048) for n in (1, 2, 4, 8, 16)},
}
"""Fly's size names (``fly platform vm-sizes``): cpu kind, cpus, memory in MB."""


def _duration(value: Any) -> float:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        seconds = parse_duration(value)
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        return seconds
    raise ValueError("expected a duration like '10s' or a number of nanoseconds")


Duration = Annotated[float, BeforeValidator(_duration), PlainSerializer(format_duration)]


def parse_autostop(value: Any) -> str:
    """Fly's ``autostop`` (and fly.toml's ``auto_stop_machines``): a bool or a mode."""
    if value is True:
        return "stop"
    if value is False:
        return "off"
    if value in ("off", "stop", "suspend"):
        return value
    raise ValueError("autostop must be true, false, 'off', 'stop' or 'suspend'")


def _autostop_wire(value: str) -> bool | str:
    return "suspend" if value == "suspend" else value == "stop"


Autostop = Annotated[str, BeforeValidator(parse_autostop), PlainSerializer(_autostop_wire)]


def _restart_policy(value: Any) -> Any:
    # flyctl's old spelling.
    return "on-failure" if value == "on-fail" else value


def _stop_signal(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("signal must be a name like 'SIGTERM' or a number")
    return signal_name(parse_signal(value, STOP_SIGNAL_NAMES))


class WireModel(BaseModel):
    """A wire object: unknown keys are dropped (as Fly's Go decoder drops them), but
    remembered in ``unknown`` so they can be reported instead of vanishing."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    _unknown: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _note_unknown(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        model = handler(data)
        if isinstance(data, dict) and isinstance(model, WireModel):
            known = _field_names(cls)
            model._unknown = tuple(str(k) for k in data if k not in known)
        return model

    @property
    def unknown(self) -> tuple[str, ...]:
        return self._unknown

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


@functools.cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    names = set(model.model_fields)
    for field in model.model_fields.values():
        if field.alias:
            names.add(field.alias)
        if isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
        elif isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str))
    return frozenset(names)


SHARED_CPUS_PER_CORE = 8
"""How many ``shared`` vCPUs one core carries. A host schedules CPU in slots, by default
this many per core (``--cpus`` overrides the count): a shared vCPU takes one slot, a
time-share of a core that bursts when the core is idle, as Fly's shared-cpu sizes do; a
``performance`` vCPU reserves a whole core, this many slots. The kernel enforces it: CPU
shares weight a shared vCPU at 1/SHARED_CPUS_PER_CORE of a performance one, and every
vCPU is capped at one core."""


class MachineGuest(WireModel):
    cpu_kind: Literal["shared", "performance"] = "shared"
    cpus: Annotated[StrictInt, Field(ge=1, le=MAX_CPUS)] = 1
    memory_mb: Annotated[StrictInt, Field(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)] = 256
    max_memory_mb: StrictInt | None = None
    gpus: StrictInt | None = None
    gpu_kind: str | None = None
    host_dedication_id: str | None = None
    kernel_args: list[str] | None = None
    persist_rootfs: str | None = None
    required_host_features: list[str] | None = None

    @property
    def cpu_slots(self) -> int:
        """The host CPU this guest reserves (see ``SHARED_CPUS_PER_CORE``)."""
        return self.cpus * (SHARED_CPUS_PER_CORE if self.cpu_kind == "performance" else 1)


class MachineInit(WireModel):
    exec: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    tty: StrictBool | None = None
    swap_size_mb: StrictInt | None = None
    kernel_args: list[str] | None = None


class MachineRestart(WireModel):
    policy: Annotated[Literal["no", "always", "on-failure"], BeforeValidator(_restart_policy)] = (
        "on-failure"
    )
    max_retries: Annotated[StrictInt, Field(ge=0)] | None = None


class StopConfig(WireModel):
    signal: Annotated[str, BeforeValidator(_stop_signal)] | None = None
    timeout: Duration | None = None


class HTTPHeader(WireModel):
    name: str
    values: list[str] = []


class MachineCheck(WireModel):
    type: Literal["tcp", "http"] = "tcp"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    grace_period: Duration | None = None
    method: str | None = None
    path: str | None = None
    protocol: Literal["http", "https"] | None = None
    tls_skip_verify: StrictBool | None = None
    tls_server_name: str | None = None
    headers: list[HTTPHeader] | None = None
    kind: Literal["informational", "readiness"] | None = None


class MachinePort(WireModel):
    port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    start_port: StrictInt | None = None
    end_port: StrictInt | None = None
    handlers: list[str] | None = None
    force_https: StrictBool | None = None
    http_options: dict[str, Any] | None = None
    tls_options: dict[str, Any] | None = None
    proxy_proto_options: dict[str, Any] | None = None


class ServiceConcurrency(WireModel):
    type: Literal["connections", "requests"] = "connections"
    soft_limit: Annotated[StrictInt, Field(ge=1)] | None = None
    hard_limit: Annotated[StrictInt, Field(ge=1)] | None = None


class MachineService(WireModel):
    protocol: Literal["tcp", "udp"] = "tcp"
    internal_port: Annotated[StrictInt, Field(ge=1, le=65535)]
    ports: list[MachinePort] | None = None
    concurrency: ServiceConcurrency | None = None
    autostop: Autostop | None = None
    autostart: StrictBool | None = None
    min_machines_running: Annotated[StrictInt, Field(ge=0)] | None = None
    checks: list[MachineCheck] | None = None
    force_instance_key: str | None = None
    force_instance_description: str | None = None


class MachineMount(WireModel):
    volume: str | None = None
    path: str
    name: str | None = None
    size_gb: StrictInt | None = None
    encrypted: StrictBool | None = None
    extend_threshold_percent: StrictInt | None = None
    add_size_gb: StrictInt | None = None
    add_size_percent: StrictInt | None = None
    min_add_size_gb: StrictInt | None = None
    size_gb_limit: StrictInt | None = None

    @field_validator("path")
    @classmethod
    def _mount_point(cls, value: str) -> str:
        if not value.startswith("/") or value == "/" or "\x00" in value or "/../" in f"{value}/":
            raise ValueError("path must be an absolute path other than / and without '..'")
        return value


class MachineFile(WireModel):
    guest_path: str
    raw_value: str | None = None
    secret_name: str | None = None
    image_config: str | None = None
    mode: StrictInt | None = None

    @field_validator("guest_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value or "/../" in f"{value}/":
            raise ValueError("guest_path must be an absolute path without '..'")
        return value


class EnvFrom(WireModel):
    env_var: str
    field_ref: Literal["id", "version", "app_name", "private_ip", "region", "image"]


class MachineProcess(WireModel):
    """One process of the machine: what it runs, as whom, with what environment. Its
    command fields replace ``init``'s when set."""

    exec: list[str] | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    env: dict[str, str] | None = None
    env_from: list[EnvFrom] | None = None
    secrets: list[dict[str, Any]] | None = None
    ignore_app_secrets: StrictBool | None = None


class MachineConfig(WireModel):
    image: Annotated[str, Field(min_length=1)]
    env: dict[str, str] | None = None
    init: MachineInit = MachineInit()
    guest: MachineGuest | None = None
    size: str | None = None
    services: list[MachineService] | None = None
    checks: dict[str, MachineCheck] | None = None
    restart: MachineRestart | None = None
    auto_destroy: StrictBool | None = None
    schedule: Literal["hourly", "daily", "weekly", "monthly"] | None = None
    mounts: list[MachineMount] | None = None
    metadata: dict[str, str] | None = None
    processes: list[MachineProcess] | None = None
    files: list[MachineFile] | None = None
    dns: dict[str, Any] | None = None
    standbys: list[str] | None = None
    stop_config: StopConfig | None = None
    metrics: dict[str, Any] | None = None
    statics: list[dict[str, Any]] | None = None
    rootfs: dict[str, Any] | None = None
    cache_drive: dict[str, Any] | None = None
    spot: dict[str, Any] | None = None
    containers: list[dict[str, Any]] | None = None
    volumes: list[dict[str, Any]] | None = None
    disable_machine_autostart: StrictBool | None = None

    @model_validator(mode="after")
    def _size_preset(self) -> MachineConfig:
        # A preset fills in guest only when the client did not send one itself.
        if self.size is not None:
            if self.size not in SIZE_PRESETS:
                raise ValueError(
                    f"unknown size {self.size!r}; use one of {', '.join(SIZE_PRESETS)}"
                )
            if self.guest is None:
                kind, cpus, memory = SIZE_PRESETS[self.size]
                self.guest = MachineGuest(cpu_kind=kind, cpus=cpus, memory_mb=memory)  # type: ignore[arg-type]
        if self.guest is None:
            self.guest = MachineGuest()
        return self

    @property
    def resolved_guest(self) -> MachineGuest:
        return self.guest or MachineGuest()

    def wire(self) -> dict[str, Any]:
        out = super().wire()
        # fly-go always serialises init, even when empty.
        out["init"] = self.init.wire()
        return out
