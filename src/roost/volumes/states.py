"""The lifecycles of a volume and of a snapshot, as explicit transition tables.

A volume::

                  made (mkfs, or restored from a snapshot)
     creating ─────────────────────────────────────────▶ created ◀─────┐
        │  │                                             │ │          │ grown
        │  │ error                                extend │ │          │ (file and
        │  ▼                                             │ ▼          │  filesystem)
        │ failed                                         │ extending ─┘
        │  │                                             │ │
        ▼  ▼          destroy (from any state above)     ▼ ▼
     destroying ◀────────────────────────────────────────────
        │ removed (once no machine holds it)
        ▼
     destroyed     (its record is deleted and its disk given back in the same write)

A snapshot::

     pending ──taken──▶ created          (expires after its retention: deleted)
        └────error────▶ failed

The API moves volumes on ``extend`` and ``destroy``; the host's agent does the rest.
States are Fly's names where Fly has one, so they go on the wire as they are.
"""

from __future__ import annotations

from typing import Literal

VolumeState = Literal["creating", "created", "extending", "failed", "destroying", "destroyed"]
VolumeInput = Literal["made", "error", "extend", "grown", "destroy", "removed"]
SnapshotState = Literal["pending", "created", "failed"]
SnapshotInput = Literal["taken", "error"]

VOLUME_TRANSITIONS: dict[tuple[VolumeState, VolumeInput], VolumeState] = {
    ("creating", "made"): "created",
    ("creating", "error"): "failed",
    ("created", "extend"): "extending",
    ("extending", "extend"): "extending",
    ("extending", "grown"): "created",
    **{(s, "destroy"): "destroying" for s in ("creating", "created", "extending", "failed")},
    ("destroying", "destroy"): "destroying",
    ("destroying", "removed"): "destroyed",
}

SNAPSHOT_TRANSITIONS: dict[tuple[SnapshotState, SnapshotInput], SnapshotState] = {
    ("pending", "taken"): "created",
    ("pending", "error"): "failed",
}

ATTACHABLE: frozenset[str] = frozenset({"creating", "created", "extending"})
"""A machine may mount a volume in these states (its start waits until it is made)."""
READABLE: frozenset[str] = frozenset({"created", "extending"})
"""A snapshot can be taken of a volume in these states."""


class InvalidTransition(Exception):
    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"no transition from {state!r} on {event!r}")
        self.state = state
        self.event = event


def volume_transition(state: str, event: VolumeInput) -> VolumeState:
    try:
        return VOLUME_TRANSITIONS[(state, event)]  # type: ignore[index]
    except KeyError:
        raise InvalidTransition(state, event) from None


def snapshot_transition(state: str, event: SnapshotInput) -> SnapshotState:
    try:
        return SNAPSHOT_TRANSITIONS[(state, event)]  # type: ignore[index]
    except KeyError:
        raise InvalidTransition(state, event) from None


def volume_can(state: str, event: VolumeInput) -> bool:
    return (state, event) in VOLUME_TRANSITIONS
