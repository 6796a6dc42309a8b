"""Human output: aligned tables, relative times, config diffs, and confirmations."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

COLUMN_GAP = "  "


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns sized to their widest cell."""
    lines = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        COLUMN_GAP.join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )


def fields(pairs: Sequence[tuple[str, str]]) -> str:
    """``Label:  value`` lines with the values aligned."""
    width = max((len(label) for label, _ in pairs), default=0) + 1
    return "\n".join(f"{(label + ':').ljust(width)}  {value}" for label, value in pairs)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string (machines) or Unix milliseconds (events, apps) as UTC."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def ago(value: Any, now: datetime | None = None) -> str:
    """``"2m ago"``; an empty string when the time is missing or unreadable."""
    when = parse_time(value)
    if when is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 0:
        return "just now" if seconds > -5 else "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now" if seconds < 1 else f"{seconds}s ago"


def timestamp(value: Any) -> str:
    """Absolute UTC time, for detail views where "2m ago" is not precise enough."""
    when = parse_time(value)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


def config_diff(old: Any, new: Any) -> list[str]:
    """Changed leaves as ``- path: old`` / ``+ path: new`` lines, sorted by path."""
    before, after = _flatten(old), _flatten(new)
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) == after.get(path):
            continue
        if path in before:
            lines.append(f"- {path}: {before[path]}")
        if path in after:
            lines.append(f"+ {path}: {after[path]}")
    return lines


def _flatten(value: Any, prefix: str = "", out: dict[str, str] | None = None) -> dict[str, str]:
    out = {} if out is None else out
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
    elif prefix:
        out[prefix] = json.dumps(value)
    return out


def warn_ignored(machine: Any) -> None:
    """Say what of a machine's config the server will not act on (its ``config``
    events in a create or update answer)."""
    for event in machine.get("events") or []:
        if event.get("type") == "config" and event.get("message"):
            click.echo(f"Warning: {event['message']}", err=True)


def confirm(question: str, *, yes: bool, can_ask: bool) -> bool:
    """True when the user agreed (or passed --yes); without a terminal, --yes is required."""
    if yes:
        return True
    if not can_ask:
        raise click.ClickException(f"{question} Pass --yes to confirm when not at a terminal.")
    return click.confirm(question, default=False, err=True)
