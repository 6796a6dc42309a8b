from __future__ import annotations

import pytest

from roost.cli.config import (
    GuestFlags,
    PortSpec,
    RunFlags,
    parse_command,
    parse_kv,
    parse_port,
    pinned_image,
    run_config,
    services,
    updated_config,
)
from tests.unit.cli.fakes import machine


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", PortSpec(8080, "tcp", 8080, None, None, ("http",))),
        ("80:8080", PortSpec(8080, "tcp", 80, None, None, ("http",))),
        ("443:8080/tcp:tls:http", PortSpec(8080, "tcp", 443, None, None, ("tls", "http"))),
        ("5432/tcp", PortSpec(5432, "tcp", 5432, None, None, ())),
        ("5432/tcp:pg_tls", PortSpec(5432, "tcp", 5432, None, None, ("pg_tls",))),
        ("53/udp", PortSpec(53, "udp", 53, None, None, ())),
        ("8000-8010:8000/tcp", PortSpec(8000, "tcp", None, 8000, 8010, ())),
        ("443:8080:tls:http", PortSpec(8080, "tcp", 443, None, None, ("tls", "http"))),
        ("80:http", PortSpec(80, "tcp", 80, None, None, ("http",))),
        ("80/TCP:HTTP", PortSpec(80, "tcp", 80, None, None, ("http",))),
    ],
)
def test_parse_port(text: str, expected: PortSpec) -> None:
    assert parse_port(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("web", "expected PORT"),
        ("", "expected PORT"),
        ("80/sctp", "invalid protocol"),
        ("80/tcp:gzip", "unknown handler 'gzip'"),
        ("70000", "out of range"),
        ("0", "out of range"),
        ("53/udp:http", "udp services take no handlers"),
        ("8000-8010/tcp", "START-END:INTERNAL"),
        ("8010-8000:80", "START-END:INTERNAL"),
        ("80:http/tcp", "after the protocol"),
    ],
)
def test_parse_port_rejects(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_port(text)


def test_ports_sharing_an_internal_port_form_one_service() -> None:
    specs = [parse_port(p) for p in ("80:8080/tcp:http", "443:8080/tcp:tls:http", "9000/tcp")]
    assert services(specs) == [
        {
            "protocol": "tcp",
            "internal_port": 8080,
            "ports": [
                {"port": 80, "handlers": ["http"]},
                {"port": 443, "handlers": ["tls", "http"]},
            ],
        },
        {"protocol": "tcp", "internal_port": 9000, "ports": [{"port": 9000, "handlers": []}]},
    ]


def test_range_port_wire() -> None:
    assert parse_port("8000-8010:8000/tcp").wire() == {
        "start_port": 8000,
        "end_port": 8010,
        "handlers": [],
    }


def test_parse_kv() -> None:
    assert parse_kv(["A=1", "B=x=y", "C="], "--env") == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ValueError, match="invalid --env 'A': expected KEY=VALUE"):
        parse_kv(["A"], "--env")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_kv(["=1"], "--env")


def test_parse_command() -> None:
    assert parse_command("sh -c 'echo hi'") == ["sh", "-c", "echo hi"]
    assert parse_command(None) == []
    with pytest.raises(ValueError, match="cannot split"):
        parse_command("sh -c 'unterminated")


def test_run_config_minimal_keeps_the_machine_running() -> None:
    assert run_config(RunFlags(image="alpine")) == {
        "image": "alpine",
        "init": {},
        "restart": {"policy": "always"},
    }


def test_run_config_full() -> None:
    flags = RunFlags(
        image="alpine",
        cmd=("sleep", "inf"),
        entrypoint=("/bin/sh", "-c"),
        env={"A": "1"},
        metadata={"team": "x"},
        ports=(parse_port("8080"),),
        guest=GuestFlags(memory_mb=512, cpus=2),
        restart="on-fail",
    )
    assert run_config(flags) == {
        "image": "alpine",
        "init": {"cmd": ["sleep", "inf"], "entrypoint": ["/bin/sh", "-c"]},
        "env": {"A": "1"},
        "metadata": {"team": "x"},
        "services": [
            {
                "protocol": "tcp",
                "internal_port": 8080,
                "ports": [{"port": 8080, "handlers": ["http"]}],
            }
        ],
        "guest": {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512},
        "restart": {"policy": "on-failure"},
    }


def test_rm_means_no_restart_and_auto_destroy_unless_restart_given() -> None:
    config = run_config(RunFlags(image="alpine", auto_destroy=True))
    assert config["restart"] == {"policy": "no"}
    assert config["auto_destroy"] is True
    config = run_config(RunFlags(image="alpine", auto_destroy=True, restart="on-failure"))
    assert config["restart"] == {"policy": "on-failure"}


def test_updated_config_merges_and_leaves_the_original_alone() -> None:
    old = machine()["config"]
    new = updated_config(
        old,
        image="nginx:1.27",
        guest=GuestFlags(memory_mb=1024),
        env={"B": "2"},
        cmd=("nginx", "-g", "daemon off;"),
    )
    assert new["image"] == "nginx:1.27"
    assert new["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024}
    assert new["env"] == {"A": "1", "B": "2"}
    assert new["init"] == {"cmd": ["nginx", "-g", "daemon off;"]}
    assert new["restart"] == old["restart"]
    assert old["image"] == "alpine:3.20"
    assert old["env"] == {"A": "1"}


def test_updated_config_without_flags_is_unchanged() -> None:
    old = machine()["config"]
    assert updated_config(old) == old


def test_pinned_image() -> None:
    assert pinned_image(machine()) == f"docker.io/library/alpine:3.20@sha256:{'a' * 64}"
    no_digest = machine(image_ref={"registry": "", "repository": "", "tag": "", "digest": ""})
    assert pinned_image(no_digest) == "alpine:3.20"
    untagged = machine()
    untagged["image_ref"] = {**untagged["image_ref"], "tag": ""}
    assert pinned_image(untagged) == f"docker.io/library/alpine@sha256:{'a' * 64}"


def test_service_settings_apply_to_every_service() -> None:
    from roost.cli.config import RunFlags, parse_port, run_config, service_settings

    settings = service_settings("stop", True, 1, 5, 10, "requests")
    config = run_config(
        RunFlags(image="i", ports=[parse_port("8080"), parse_port("5432/tcp")], service=settings)
    )
    for svc in config["services"]:
        assert svc["autostop"] == "stop" and svc["autostart"] is True
        assert svc["min_machines_running"] == 1
        assert svc["concurrency"] == {"type": "requests", "soft_limit": 5, "hard_limit": 10}
    assert service_settings(None, None, None, None, None, None) == {}
