"""fly.toml as flyctl reads it → one machine config per process group; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.appconfig import (
    AppConfig,
    ConfigError,
    GroupError,
    group_configs,
    load_config,
    minimal_config,
)
from roost.appconfig.guest import guest, parse_memory
from roost.appconfig.load import parse_config

# A fly.toml as people write them: keys roost ignores included.
FLY_TOML = """
app = "shop"
primary_region = "ams"
kill_signal = "SIGTERM"
kill_timeout = 10
swap_size_mb = 512
console_command = "/bin/sh"

[build]
  image = "registry.local/shop:1"
  dockerfile = "Dockerfile"

[env]
  PORT = 8080
  DEBUG = false
  NAME = "shop"

[processes]
  web = "/bin/httpd -f -p 8080 -h /www"
  worker = "sh -c 'sleep inf'"

[http_service]
  internal_port = 8080
  force_https = true
  auto_stop_machines = "stop"
  auto_start_machines = true
  min_machines_running = 1
  processes = ["web"]
  [http_service.concurrency]
    type = "requests"
    soft_limit = 20
    hard_limit = 25
  [[http_service.checks]]
    grace_period = "5s"
    interval = "15s"
    timeout = "2s"
    method = "GET"
    path = "/health"
    headers = { X-Check = "yes" }

[[services]]
  internal_port = 5432
  processes = ["worker"]
  [[services.ports]]
    port = 5432
    handlers = ["pg_tls"]
  [[services.tcp_checks]]
    interval = 10000
    timeout = 2000

[checks]
  [checks.alive]
    type = "tcp"
    port = 8080
    interval = "30s"
    processes = ["web"]

[[vm]]
  size = "shared-cpu-2x"
  memory = "1gb"
  processes = ["web"]

[[vm]]
  cpus = 1
  memory_mb = 512

[[restart]]
  policy = "always"
  processes = ["worker"]

[mounts]
  source = "data"
  destination = "/data"
  processes = ["worker"]

[deploy]
  strategy = "canary"
  release_command = "migrate"

[experimental]
  auto_rollback = true
"""


def load(tmp_path: Path, text: str) -> AppConfig:
    path = tmp_path / "fly.toml"
    path.write_text(text)
    return load_config(path)


def test_a_realistic_fly_toml(tmp_path: Path) -> None:
    config = load(tmp_path, FLY_TOML)
    web, worker = group_configs(config, "registry.local/shop:2")
    assert config.deploy.strategy == "canary"
    assert web.name == "web" and worker.name == "worker"
    assert web.config["image"] == "registry.local/shop:2"
    assert web.config["init"] == {"cmd": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]}
    assert worker.config["init"] == {"cmd": ["sh", "-c", "sleep inf"]}
    env = {"PORT": "8080", "DEBUG": "false", "NAME": "shop", "PRIMARY_REGION": "ams"}
    assert web.config["env"] == worker.config["env"] == env
    assert web.config["guest"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 1024}
    assert worker.config["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512}
    assert web.config["metadata"] == {"fly_platform_version": "v2", "fly_process_group": "web"}
    assert web.config["stop_config"] == {"signal": "SIGTERM", "timeout": "10s"}
    (http,) = web.config["services"]
    assert http == {
        "protocol": "tcp",
        "internal_port": 8080,
        "ports": [
            {"port": 80, "handlers": ["http"], "force_https": True},
            {"port": 443, "handlers": ["http", "tls"]},
        ],
        "concurrency": {"type": "requests", "soft_limit": 20, "hard_limit": 25},
        "autostop": True,
        "autostart": True,
        "min_machines_running": 1,
        "checks": [
            {
                "type": "http",
                "interval": "15s",
                "timeout": "2s",
                "grace_period": "5s",
                "method": "GET",
                "path": "/health",
                "headers": [{"name": "X-Check", "values": ["yes"]}],
            }
        ],
    }
    assert web.config["checks"] == {"alive": {"type": "tcp", "port": 8080, "interval": "30s"}}
    assert "mounts" not in web.config and "restart" not in web.config
    (pg,) = worker.config["services"]
    assert pg["ports"] == [{"port": 5432, "handlers": ["pg_tls"]}]
    # Old-style integer durations are milliseconds.
    assert pg["checks"] == [{"type": "tcp", "interval": "10s", "timeout": "2s"}]
    assert worker.config["mounts"] == [{"name": "data", "path": "/data"}]
    assert worker.config["restart"] == {"policy": "always"}
    assert "checks" not in worker.config
    assert web.has_services and web.has_checks and not web.has_mounts
    assert worker.has_mounts


def test_without_processes_there_is_one_group_named_app() -> None:
    config = parse_config(
        {"build": {"image": "x"}, "http_service": {"internal_port": 80}, "vm": {"cpus": 2}},
        "fly.toml",
    )
    (app,) = group_configs(config, "x")
    assert app.name == "app" and app.has_services and not app.has_checks
    assert app.config["init"] == {}
    assert app.config["guest"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}
    assert "env" not in app.config


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (
            {"http_service": {"internal_port": "8080"}},
            "http_service.internal_port: expected an integer (got '8080')",
        ),
        ({"http_service": {}}, "http_service.internal_port is required"),
        ({"http_service": 5}, "http_service: expected a table (got 5)"),
        ({"services": "x"}, "services: expected a list (got 'x')"),
        ({"vm": {"size": "huge"}}, "vm[0].size: unknown size 'huge'; use one of shared-cpu-1x"),
        ({"vm": [{"memory": "1tb"}]}, "vm[0].memory: invalid memory '1tb'"),
        ({"deploy": {"strategy": "fast"}}, "deploy.strategy: input should be 'rolling'"),
        (
            {"processes": {"web": "a"}, "http_service": {"internal_port": 80, "processes": ["wb"]}},
            "http_service.processes names 'wb', which is not in [processes] (groups: web)",
        ),
        (
            {"services": [{"internal_port": 80, "ports": [{"handlers": ["http"]}]}]},
            "services[0].ports[0]: give a port, or start_port and end_port",
        ),
        ({"checks": {"up": {"type": "http"}}}, "checks.up.port is required"),
        ({"mounts": {"source": "d", "destination": "d"}}, "mounts[0].destination: must be"),
        ({"env": {"A": [1]}}, "env.A: env values must be strings, numbers or booleans"),
        ({"kill_timeout": "soon"}, "kill_timeout: invalid duration 'soon'"),
        ({"processes": {"web": ""}}, "processes.web: the command is empty"),
        ({"http_service": {"internal_port": 80, "auto_stop_machines": "sometimes"}}, "'suspend'"),
    ],
)
def test_errors_name_the_key_and_the_problem(data: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "fly.toml")
    assert str(caught.value).startswith("fly.toml: ")
    assert complaint in str(caught.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(tmp_path, "app = ")


def test_two_mounts_for_one_group_are_refused() -> None:
    config = parse_config(
        {"mounts": [{"source": "a", "destination": "/a"}, {"source": "b", "destination": "/b"}]},
        "fly.toml",
    )
    with pytest.raises(GroupError, match="'app' has 2 mounts; a machine takes one"):
        group_configs(config, "x")


def test_minimal_config_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text(minimal_config("hello", "127.0.0.1:5000/roost/hello:latest", "local"))
    config = load_config(path)
    assert (config.app, config.primary_region, config.build.image) == (
        "hello",
        "local",
        "127.0.0.1:5000/roost/hello:latest",
    )


@pytest.mark.parametrize(
    ("value", "megabytes"), [(512, 512), ("512", 512), ("512mb", 512), ("1gb", 1024), ("2GB", 2048)]
)
def test_parse_memory(value: object, megabytes: int) -> None:
    assert parse_memory(value) == megabytes


def test_guest_sizes() -> None:
    assert guest("performance-2x") == {"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096}
    assert guest("shared-cpu-2x", memory_mb=1024)["memory_mb"] == 1024
    assert guest(cpu_kind="performance") == {
        "cpu_kind": "performance",
        "cpus": 1,
        "memory_mb": 2048,
    }
    with pytest.raises(ValueError, match="unknown size 'shared-cpu-3x'"):
        guest("shared-cpu-3x")
