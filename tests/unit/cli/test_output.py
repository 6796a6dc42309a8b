from __future__ import annotations

from datetime import UTC, datetime

import pytest

from roost.cli.output import ago, config_diff, fields, parse_time, table, timestamp

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_table_aligns_columns_and_strips_trailing_space() -> None:
    out = table(("ID", "NAME", "IP"), [("1", "alpha", ""), ("1234", "b", "fdaa::1")])
    assert out.splitlines() == [
        "ID    NAME   IP",
        "1     alpha",
        "1234  b      fdaa::1",
    ]


def test_fields() -> None:
    assert fields([("ID", "1"), ("State", "started")]).splitlines() == [
        "ID:     1",
        "State:  started",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", "just now"),
        ("2024-05-01T11:59:30Z", "30s ago"),
        ("2024-05-01T11:58:00Z", "2m ago"),
        ("2024-05-01T09:00:00Z", "3h ago"),
        ("2024-04-28T12:00:00Z", "3d ago"),
        (int(datetime(2024, 5, 1, 11, 55, tzinfo=UTC).timestamp() * 1000), "5m ago"),
        ("2024-05-01T12:00:02Z", "just now"),
        ("2024-05-02T12:00:00Z", "in the future"),
        ("", ""),
        ("yesterday", ""),
        (None, ""),
    ],
)
def test_ago(value: object, expected: str) -> None:
    assert ago(value, NOW) == expected


def test_parse_time_reads_both_wire_formats() -> None:
    assert parse_time("2024-05-01T12:00:00Z") == NOW
    assert parse_time(int(NOW.timestamp() * 1000)) == NOW
    assert parse_time(True) is None
    assert timestamp(int(NOW.timestamp() * 1000)) == "2024-05-01 12:00:00 UTC"


def test_config_diff() -> None:
    old = {
        "image": "alpine",
        "env": {"A": "1", "GONE": "x"},
        "guest": {"cpus": 1, "memory_mb": 256},
        "init": {"cmd": ["sleep", "inf"]},
        "services": [{"internal_port": 80}],
    }
    new = {
        "image": "nginx",
        "env": {"A": "1", "NEW": "y"},
        "guest": {"cpus": 1, "memory_mb": 512},
        "init": {"cmd": ["sleep", "1"]},
        "services": [{"internal_port": 80}],
    }
    assert config_diff(old, new) == [
        '- env.GONE: "x"',
        '+ env.NEW: "y"',
        "- guest.memory_mb: 256",
        "+ guest.memory_mb: 512",
        '- image: "alpine"',
        '+ image: "nginx"',
        '- init.cmd[1]: "inf"',
        '+ init.cmd[1]: "1"',
    ]
    assert config_diff(old, old) == []
    assert config_diff({"init": {}}, {"init": {"cmd": ["x"]}}) == [
        "- init: {}",
        '+ init.cmd[0]: "x"',
    ]
