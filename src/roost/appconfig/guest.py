"""Machine sizes as Fly names them (``shared-cpu-2x``, ``performance-1x``) and memory
amounts as people write them (``512``, ``"1gb"``), turned into a ``guest``.

fly.toml's ``[[vm]]`` and ``roost scale vm`` share these rules: a size gives the CPU
kind, CPU count and memory; ``cpus``, ``cpu_kind`` and ``memory`` then override it. A
CPU count without a size gets the kind's smallest memory per CPU, as flyctl does.
"""

from __future__ import annotations

import re
from typing import Any

SHARED_MB_PER_CPU = 256
PERFORMANCE_MB_PER_CPU = 2048

# Fly's preset names: shared-cpu-Nx and performance-Nx.
SIZES: dict[str, tuple[str, int, int]] = {
    **{f"shared-cpu-{n}x": ("shared", n, n * SHARED_MB_PER_CPU) for n in (1, 2, 4, 8)},
    **{
        f"performance-{n}x": ("performance", n, n * PERFORMANCE_MB_PER_CPU)
        for n in (1, 2, 4, 8, 16)
    },
}
DEFAULT_SIZE = "shared-cpu-1x"

_MEMORY = re.compile(r"^\s*(\d+)\s*(mb|m|mib|gb|g|gib)?\s*$", re.IGNORECASE)


def parse_memory(value: Any) -> int:
    """Megabytes from ``512``, ``"512mb"`` or ``"1gb"`` (a bare number is megabytes)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("memory must be megabytes (512) or a size like '1gb'")
    if isinstance(value, int):
        megabytes = value
    else:
        match = _MEMORY.match(value)
        if not match:
            raise ValueError(f"invalid memory {value!r}: use megabytes (512) or a size like '1gb'")
        unit = (match.group(2) or "mb").lower()
        megabytes = int(match.group(1)) * (1024 if unit.startswith("g") else 1)
    if megabytes < 1:
        raise ValueError("memory must be at least 1 MB")
    return megabytes


def check_size(name: str) -> str:
    if name not in SIZES:
        raise ValueError(f"unknown size {name!r}; use one of {', '.join(SIZES)}")
    return name


def guest(
    size: str | None = None,
    *,
    cpus: int | None = None,
    cpu_kind: str | None = None,
    memory_mb: int | None = None,
) -> dict[str, Any]:
    """A ``guest`` dict: the size (or the CPU kind and count) first, then the overrides."""
    if size is not None:
        kind, count, memory = SIZES[check_size(size)]
        kind = cpu_kind or kind
        count = cpus or count
    else:
        kind = cpu_kind or "shared"
        count = cpus or 1
        memory = count * (PERFORMANCE_MB_PER_CPU if kind == "performance" else SHARED_MB_PER_CPU)
    return {"cpu_kind": kind, "cpus": count, "memory_mb": memory_mb or memory}
