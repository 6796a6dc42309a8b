"""What machines cost: time spent running (by size) and stopped, kept by the agent.

Every state change closes the machine's open interval and opens the next, in the
host's SQLite file next to the run journal. A stopped machine costs only its storage,
which is why stopped time is counted too: users weigh autostop settings against it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    machine_id TEXT NOT NULL,
    app TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('running', 'stopped')),
    size TEXT NOT NULL,
    start REAL NOT NULL,
    stop REAL
);
CREATE INDEX IF NOT EXISTS usage_open ON usage (machine_id) WHERE stop IS NULL;
CREATE INDEX IF NOT EXISTS usage_app ON usage (app, start);
"""

RUNNING_STATES = frozenset({"started", "starting", "restarting", "replacing", "stopping"})
BILLED_STATES = RUNNING_STATES | {"stopped", "suspended", "created", "failed", "suspending"}


def size_label(cpu_kind: str, cpus: int, memory_mb: int) -> str:
    """``shared-1x-256mb``: what a running second of this machine is worth."""
    return f"{cpu_kind}-{cpus}x-{memory_mb}mb"


@dataclass
class MachineUsage:
    machine_id: str
    app: str
    running_seconds: dict[str, float] = field(default_factory=dict)
    """By size label."""
    stopped_seconds: float = 0.0


class UsageLedger:
    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._clock = clock

    def record(self, machine_id: str, app: str, state: str, size: str) -> None:
        """The machine is now in ``state``; a new interval starts if its kind changed."""
        now = self._clock()
        kind = "running" if state in RUNNING_STATES else "stopped"
        billed = state in BILLED_STATES
        row = self._db.execute(
            "SELECT rowid, kind, size FROM usage WHERE machine_id = ? AND stop IS NULL",
            (machine_id,),
        ).fetchone()
        if row is not None and billed and (row[1], row[2]) == (kind, size):
            return
        with self._db:
            if row is not None:
                self._db.execute("UPDATE usage SET stop = ? WHERE rowid = ?", (now, row[0]))
            if billed:
                self._db.execute(
                    "INSERT INTO usage VALUES (?, ?, ?, ?, ?, NULL)",
                    (machine_id, app, kind, size, now),
                )

    def report(
        self, *, app: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[MachineUsage]:
        """Seconds per machine within [since, until] (open intervals count up to now)."""
        end = until if until is not None else self._clock()
        start = since if since is not None else 0.0
        query = "SELECT machine_id, app, kind, size, start, stop FROM usage WHERE start < ?"
        args: list[object] = [end]
        if app is not None:
            query += " AND app = ?"
            args.append(app)
        out: dict[str, MachineUsage] = {}
        for machine_id, machine_app, kind, size, begin, stop in self._db.execute(query, args):
            seconds = min(stop if stop is not None else end, end) - max(begin, start)
            if seconds <= 0:
                continue
            usage = out.setdefault(machine_id, MachineUsage(machine_id, machine_app))
            if kind == "running":
                usage.running_seconds[size] = usage.running_seconds.get(size, 0.0) + seconds
            else:
                usage.stopped_seconds += seconds
        return sorted(out.values(), key=lambda u: (u.app, u.machine_id))

    def close(self) -> None:
        self._db.close()
