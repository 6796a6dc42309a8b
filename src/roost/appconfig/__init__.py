"""The app config: ``roost.toml`` (fly.toml's keys; a ``fly.toml`` is read as it is),
and the machine config it gives each process group."""

from roost.appconfig.load import (
    ConfigError,
    find_config,
    load_config,
    minimal_config,
    read_config,
)
from roost.appconfig.machines import DEFAULT_GROUP, GroupConfig, GroupError, group_configs
from roost.appconfig.model import STRATEGIES, AppConfig

__all__ = [
    "DEFAULT_GROUP",
    "STRATEGIES",
    "AppConfig",
    "ConfigError",
    "GroupConfig",
    "GroupError",
    "find_config",
    "group_configs",
    "load_config",
    "minimal_config",
    "read_config",
]
