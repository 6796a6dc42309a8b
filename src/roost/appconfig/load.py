"""Finding, reading and writing the app config file.

``roost.toml`` is looked for first, then ``fly.toml``, so a directory set up for Fly
works as it is. Every problem becomes one ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from roost.appconfig.model import AppConfig

FILE_NAMES = ("roost.toml", "fly.toml")
# Pydantic's wording names our model classes; say what the file should hold instead.
EXPECTED = {
    "model_type": "expected a table",
    "dict_type": "expected a table",
    "list_type": "expected a list",
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
}


class ConfigError(Exception):
    """The config file is missing, unreadable or wrong; the message says where and why."""


def find_config(directory: Path) -> Path | None:
    for name in FILE_NAMES:
        path = directory / name
        if path.is_file():
            return path
    return None


def load_config(path: Path) -> AppConfig:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    return read_config(text, str(path))


def read_config(text: str, source: str) -> AppConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    return parse_config(data, source)


def parse_config(data: dict[str, Any], source: str) -> AppConfig:
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def minimal_config(app: str, image: str, region: str | None) -> str:
    """A ``roost.toml`` with just the app, its region and its image."""
    lines = [f"app = {_string(app)}"]
    if region:
        lines.append(f"primary_region = {_string(region)}")
    lines += ["", "[build]", f"  image = {_string(image)}", ""]
    return "\n".join(lines)


def _problem(error: Any) -> str:
    key = _key(error["loc"])
    if error["type"] == "missing":
        return f"{key} is required"
    message = EXPECTED.get(error["type"]) or str(error["msg"]).removeprefix("Value error, ")
    if not key:
        return message
    message = message[:1].lower() + message[1:]
    if error["type"] == "value_error":  # our own messages already quote the value
        return f"{key}: {message}"
    return f"{key}: {message} (got {error['input']!r})"


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _string(value: str) -> str:
    # A JSON string is a valid TOML basic string.
    return json.dumps(value)
