"""Wire vocabulary: durations, signals, ids, the state table, config models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from roost.spec import ids
from roost.spec.config import MachineConfig
from roost.spec.durations import format_duration, parse_duration
from roost.spec.signals import STOP_SIGNAL_NAMES, parse_signal
from roost.spec.states import SETTLED, STATES, TRANSIENT, InvalidTransition, transition


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("10", 10.0),
        (5_000_000_000, 5.0),
        ("2h45m", 9900.0),
    ],
)
def test_parse_duration(value: str | int, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "ten", "10x", "s", "1s2", True])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)  # type: ignore[arg-type]


def test_format_duration_round_trips() -> None:
    for seconds in (0, 1, 59, 60, 61, 3600, 3725, 0.25):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
    assert format_duration(90) == "1m30s"


def test_signals_by_name_and_number() -> None:
    assert parse_signal("SIGTERM") == 15
    assert parse_signal("term") == 15
    assert parse_signal(9) == 9
    assert parse_signal("9") == 9
    with pytest.raises(ValueError):
        parse_signal("SIGSEGV", STOP_SIGNAL_NAMES)
    with pytest.raises(ValueError):
        parse_signal(999)


def test_ids_have_fly_formats() -> None:
    mid = ids.machine_id()
    assert ids.is_machine_id(mid) and len(mid) == 14
    first, second = ids.ulid(1000.0), ids.ulid(1000.001)
    assert ids.is_ulid(first) and first < second
    assert ids.ulid_time(first) == pytest.approx(1000.0)
    assert len(ids.lease_nonce()) == 12
    assert not ids.is_machine_id("../etc/passwd")
    assert ids.is_app_name("my-app-1") and not ids.is_app_name("My_App")


def test_state_table_is_closed() -> None:
    assert set(STATES) == TRANSIENT | SETTLED
    for (state, _), target in __import__("roost.spec.states").spec.states.TRANSITIONS.items():
        assert state in STATES and target in STATES
    assert transition("created", "start") == "starting"
    assert transition("starting", "running") == "started"
    assert transition("started", "exited") == "stopped"
    assert transition("started", "destroy") == "destroying"
    with pytest.raises(InvalidTransition):
        transition("destroyed", "start")
    # After a crash: whatever was recorded, the runtime's facts win.
    assert transition("stopped", "running") == "started"
    assert transition("stopping", "start") == "starting"
    assert transition("created", "running") == "started"
    assert transition("stopping", "running") == "started"
    with pytest.raises(InvalidTransition):
        transition("destroyed", "running")


@pytest.mark.parametrize("state", [s for s in STATES if s != "destroyed"])
def test_every_state_takes_every_event(state: str) -> None:
    for event in ("start", "running", "start_failed", "stop", "exited", "update", "destroy"):
        assert transition(state, event) in STATES  # type: ignore[arg-type]


def test_config_defaults_and_wire_output() -> None:
    config = MachineConfig.model_validate(
        {"image": "a/b:c", "services": [{"internal_port": 80, "autostop": True}]}
    )
    wire = config.wire()
    assert wire["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert wire["init"] == {}
    assert wire["services"][0]["autostop"] is True
    assert MachineConfig.model_validate(wire).wire() == wire


def test_config_rejects_wrong_types_with_field_path() -> None:
    with pytest.raises(ValidationError) as info:
        MachineConfig.model_validate({"image": "a", "restart": {"policy": "sometimes"}})
    assert info.value.errors()[0]["loc"][:2] == ("restart", "policy")
    with pytest.raises(ValidationError):
        MachineConfig.model_validate({"image": "a", "files": [{"guest_path": "../etc/x"}]})
    with pytest.raises(ValidationError):
        MachineConfig.model_validate(
            {"image": "a", "services": [{"internal_port": 80, "autostart": "yes"}]}
        )
