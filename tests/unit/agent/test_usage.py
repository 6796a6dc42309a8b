"""The usage ledger adds intervals up exactly (fake clock)."""

from __future__ import annotations

from pathlib import Path

from roost.agent.usage import UsageLedger, size_label
from roost.cli.usage import parse_since


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_running_by_size_and_stopped_time(tmp_path: Path) -> None:
    clock = Clock()
    ledger = UsageLedger(tmp_path / "usage.db", clock=clock)
    small, big = size_label("shared", 1, 256), size_label("performance", 2, 4096)
    ledger.record("m1", "web", "created", small)
    clock.now += 5
    ledger.record("m1", "web", "starting", small)
    clock.now += 1
    ledger.record("m1", "web", "started", small)  # same kind: no new interval
    clock.now += 60
    ledger.record("m1", "web", "stopped", small)
    clock.now += 30
    ledger.record("m1", "web", "started", big)  # resized by an update
    clock.now += 10
    ledger.record("m2", "api", "started", small)
    clock.now += 4
    [m2] = ledger.report(app="api")
    assert m2.running_seconds == {small: 4}
    web = ledger.report(app="web")[0]
    assert web.running_seconds == {small: 61, big: 14}
    assert web.stopped_seconds == 35
    # A window cuts intervals at its edges.
    [windowed] = ledger.report(app="web", since=1060, until=1100)
    assert windowed.running_seconds == {small: 6, big: 4}
    assert windowed.stopped_seconds == 30
    ledger.record("m1", "web", "destroyed", "")
    clock.now += 100
    assert ledger.report(app="web")[0].running_seconds[big] == 14, "nothing after destroy"
    assert {u.machine_id for u in ledger.report()} == {"m1", "m2"}
    ledger.close()


def test_since_spans() -> None:
    assert parse_since("30m", now=10_000) == 10_000 - 1800
    assert parse_since("2d", now=200_000) == 200_000 - 172_800
    assert parse_since("1234.5") == 1234.5
    assert parse_since(None) is None
