"""How machines, their checks and their events read in a terminal."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from roost.cli.client import JSONObject
from roost.cli.output import ago, table, timestamp


def events_table(events: Sequence[JSONObject]) -> str:
    rows = [
        (
            e.get("status", ""),
            e.get("type", ""),
            e.get("source", ""),
            timestamp(e.get("timestamp")),
            event_info(e),
        )
        for e in events
    ]
    return table(("STATE", "EVENT", "SOURCE", "TIMESTAMP", "INFO"), rows)


def event_info(event: JSONObject) -> str:
    if message := event.get("message"):
        return str(message)
    exit_event = (event.get("request") or {}).get("exit_event")
    if not exit_event:
        return ""
    parts = [f"exit_code={exit_event.get('exit_code', '')}"]
    if exit_event.get("signal") or exit_event.get("guest_signal"):
        parts.append(f"signal={exit_event.get('signal') or exit_event.get('guest_signal')}")
    if exit_event.get("oom_killed"):
        parts.append("oom_killed")
    if exit_event.get("requested_stop"):
        parts.append("requested")
    if exit_event.get("restarting"):
        parts.append("restarting")
    return " ".join(parts)


def image_label(machine: JSONObject) -> str:
    ref = machine.get("image_ref") or {}
    repository = ref.get("repository") or ""
    if not repository:
        return str((machine.get("config") or {}).get("image", ""))
    registry = ref.get("registry") or ""
    if registry in ("", "docker.io"):
        name = repository.removeprefix("library/")
    else:
        name = f"{registry}/{repository}"
    return f"{name}:{ref['tag']}" if ref.get("tag") else name


def checks_summary(checks: Sequence[JSONObject] | None) -> str:
    if not checks:
        return ""
    passing = sum(1 for c in checks if c.get("status") == "passing")
    return f"{passing}/{len(checks)}"


def guest_label(guest: JSONObject | None) -> str:
    guest = guest or {}
    cpus = guest.get("cpus", 1)
    return (
        f"{guest.get('cpu_kind', 'shared')}, {cpus} CPU{'s' if cpus != 1 else ''}, "
        f"{guest.get('memory_mb', 256)} MB"
    )


def command_label(init: JSONObject | None) -> str:
    init = init or {}
    if init.get("exec"):
        return shlex.join(init["exec"])
    argv = [*(init.get("entrypoint") or []), *(init.get("cmd") or [])]
    return shlex.join(argv) if argv else "(the image's)"


def restart_label(config: JSONObject) -> str:
    restart = config.get("restart") or {}
    label = str(restart.get("policy", "on-failure"))
    if restart.get("max_retries") is not None:
        label += f" (max {restart['max_retries']} retries)"
    if config.get("auto_destroy"):
        label += ", destroyed on exit"
    return label


def when(value: Any) -> str:
    stamp = timestamp(value)
    return f"{stamp} ({ago(value)})" if stamp else ""
