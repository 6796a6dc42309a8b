"""The agent's local journal of in-flight runs, in the host's own SQLite file.

A run is one action applied to one machine (start, stop, restart, destroy, ...) as a
fixed list of idempotent steps. The journal records which step a run reached, so an
agent killed mid-run resumes it at that step after a restart instead of forgetting it
or starting over from a state that no longer holds. Finished runs move to a short
history table for debugging.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HISTORY_KEPT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    machine_id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    generation INTEGER NOT NULL,
    plan TEXT NOT NULL,
    step INTEGER NOT NULL,
    started_at REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    plan TEXT NOT NULL,
    outcome TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    error TEXT NOT NULL
);
"""


@dataclass
class Run:
    machine_id: str
    app: str
    generation: int
    plan: str
    step: int = 0
    started_at: float = 0.0
    payload: dict[str, Any] = field(default_factory=dict)
    """Facts a later step needs after a restart (e.g. the resolved image digest)."""


class Journal:
    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A process crash must not lose a step; the host losing power may, because
        # every step re-checks reality when it runs again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._clock = clock

    def begin(self, run: Run) -> Run:
        run.started_at = run.started_at or self._clock()
        self._db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                run.machine_id,
                run.app,
                run.generation,
                run.plan,
                run.step,
                run.started_at,
                json.dumps(run.payload),
            ),
        )
        return run

    def advance(self, run: Run) -> None:
        run.step += 1
        self._db.execute(
            "UPDATE runs SET step = ?, payload = ? WHERE machine_id = ?",
            (run.step, json.dumps(run.payload), run.machine_id),
        )

    def finish(self, run: Run, outcome: str, error: str = "") -> None:
        with self._db:
            self._db.execute("DELETE FROM runs WHERE machine_id = ?", (run.machine_id,))
            self._db.execute(
                "INSERT INTO history (machine_id, generation, plan, outcome, started_at,"
                " finished_at, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.machine_id,
                    run.generation,
                    run.plan,
                    outcome,
                    run.started_at,
                    self._clock(),
                    error,
                ),
            )
            self._db.execute(
                "DELETE FROM history WHERE id <= (SELECT MAX(id) FROM history) - ?",
                (HISTORY_KEPT,),
            )

    def active(self) -> dict[str, Run]:
        rows = self._db.execute(
            "SELECT machine_id, app, generation, plan, step, started_at, payload FROM runs"
        ).fetchall()
        return {
            row[0]: Run(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]))
            for row in rows
        }

    def history(self, machine_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT generation, plan, outcome, started_at, finished_at, error FROM history"
            " WHERE machine_id = ? ORDER BY id",
            (machine_id,),
        ).fetchall()
        keys = ("generation", "plan", "outcome", "started_at", "finished_at", "error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def close(self) -> None:
        self._db.close()
