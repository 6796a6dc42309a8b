"""Go-style durations, as Fly's wire format carries them.

fly-go emits strings like ``"15s"`` or ``"1m30s"`` and accepts strings or integer
nanoseconds; older docs send plain numbers. We accept all of them and always emit
strings.
"""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str | int | float) -> float:
    """Seconds from a Go duration string, integer nanoseconds, or a bare number string.

    A bare number in a string is read as seconds (``?timeout=10`` on restart), an
    integer as nanoseconds (fly-go's JSON encoding).
    """
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, int):
        return value / 1e9
    if isinstance(value, float):
        return value / 1e9
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body) or pos == 0:
        raise ValueError(f"invalid duration {value!r}: use a number with a unit, like '10s'")
    return sign * total


def format_duration(seconds: float) -> str:
    """The shortest Go-style string for a whole number of seconds (sub-second → ms)."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or not out:
        out += f"{secs}s"
    return out
