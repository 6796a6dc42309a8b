"""The machine lifecycle, as an explicit transition table.

::

                 launch/start                 running
     created ───────────────▶ starting ───────────────▶ started ◀──────────┐
        │                      │   │                    │  │  │           │
        │              failed  │   │ stop        stop/  │  │  │ restart   │ running
        │                      ▼   ▼             suspend│  │  ▼           │
        │                   failed stopping ◀───────────┘  │ restarting ──┘
        │                      │     │                     │    (stop, then start)
        │                      │     │ exited              │ update
        │                      │     ▼                     ▼
        │        start ┌────── stopped / suspended    replacing ──▶ starting | stopped
        │              ▼
        │           starting            exited (main process ended on its own)
        │                               started ──▶ stopped, then the restart policy:
        │                               starting again, or stay stopped, or destroy
        ▼
     destroying ──▶ destroyed      (from any state: destroy)

``transition(state, event)`` is the only way the agent moves a machine. The table
holds the moves of a machine that nothing interrupts; after a crash the agent can find
any recorded state beside any runtime fact (a process running while the record says
``stopping``, say), so every other pair converges on what the event says is true now
(``CONVERGE``): the record follows the world, and the pending generation then moves the
machine where it should be. Only ``destroyed`` is final: nothing moves it, and asking
raises. States are Fly's names, so they go on the wire as is.
"""

from __future__ import annotations

from typing import Literal

State = Literal[
    "created",
    "starting",
    "started",
    "stopping",
    "stopped",
    "suspending",
    "suspended",
    "restarting",
    "replacing",
    "destroying",
    "destroyed",
    "failed",
]
Input = Literal[
    "start",  # a start (or launch) begins
    "running",  # the main process runs
    "start_failed",
    "stop",  # a requested stop begins
    "suspend",
    "exited",  # the main process ended (requested or not)
    "restart",
    "update",
    "destroy",
    "destroyed",
]

STATES: tuple[State, ...] = State.__args__  # type: ignore[attr-defined]
TRANSIENT: frozenset[State] = frozenset(
    {"starting", "stopping", "suspending", "restarting", "replacing", "destroying"}
)
SETTLED: frozenset[State] = frozenset(set(STATES) - TRANSIENT)
# States a user can ask to wait for (plus the pseudo-state "settled").
WAITABLE: frozenset[str] = frozenset(
    {"created", "started", "stopped", "suspended", "destroyed", "failed", "settled"}
)

_STARTABLE: tuple[State, ...] = ("created", "stopped", "suspended", "failed")
_ANY: tuple[State, ...] = tuple(s for s in STATES if s != "destroyed")

TRANSITIONS: dict[tuple[State, Input], State] = {
    **{(s, "start"): "starting" for s in _STARTABLE},
    ("starting", "start"): "starting",
    ("restarting", "start"): "starting",
    ("replacing", "start"): "starting",
    ("starting", "running"): "started",
    ("starting", "start_failed"): "failed",
    ("starting", "exited"): "stopped",
    ("started", "stop"): "stopping",
    ("starting", "stop"): "stopping",
    ("stopping", "stop"): "stopping",
    ("started", "suspend"): "suspending",
    ("stopping", "exited"): "stopped",
    ("suspending", "exited"): "suspended",
    ("started", "exited"): "stopped",
    ("restarting", "exited"): "restarting",
    ("replacing", "exited"): "replacing",
    ("started", "restart"): "restarting",
    ("restarting", "running"): "started",
    **{(s, "update"): "replacing" for s in (*_STARTABLE, "started", "starting")},
    ("replacing", "running"): "started",
    ("replacing", "start_failed"): "failed",
    ("replacing", "stop"): "stopped",
    ("restarting", "start_failed"): "failed",
    ("restarting", "stop"): "stopped",
    **{(s, "destroy"): "destroying" for s in _ANY},
    ("destroying", "exited"): "destroying",
    ("destroying", "destroyed"): "destroyed",
}


CONVERGE: dict[Input, State] = {
    "start": "starting",
    "running": "started",
    "start_failed": "failed",
    "stop": "stopping",
    "suspend": "suspending",
    "exited": "stopped",
    "restart": "restarting",
    "update": "replacing",
    "destroy": "destroying",
    "destroyed": "destroyed",
}
"""Where an event leads from a state the table has no move for: what it says is true."""


class InvalidTransition(Exception):
    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"no transition from {state!r} on {event!r}")
        self.state = state
        self.event = event


def transition(state: str, event: Input) -> State:
    if state == "destroyed" or state not in STATES:
        raise InvalidTransition(state, event)
    return TRANSITIONS.get((state, event), CONVERGE[event])  # type: ignore[arg-type]
