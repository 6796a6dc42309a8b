"""Identifier formats, as Fly emits them.

Machine ids are 14 lowercase hex characters; versions, instance ids and event ids are
26-character ULIDs (time-ordered, so sorting them sorts by creation); lease nonces are
12 hex characters; volume ids are ``vol_`` and snapshot ids ``vs_`` followed by 16
lowercase letters and digits. None of them encode the host, so a machine keeps its id
wherever it runs.
"""

from __future__ import annotations

import os
import re
import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MACHINE_ID = re.compile(r"^[0-9a-f]{14}$")
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_APP_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,128}$")
_VOLUME_ID = re.compile(r"^vol_[a-z0-9]{16}$")
_SNAPSHOT_ID = re.compile(r"^vs_[a-z0-9]{16}$")
_VOLUME_NAME = re.compile(r"^[a-z0-9_]{1,30}$")
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


_last = [0, 0]


def ulid(now: float | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32.

    Monotonic within a process: ids made in the same millisecond count up from the
    first one's random part, so events written together keep the order they were made.
    """
    ms = int((time.time() if now is None else now) * 1000)
    fresh = int.from_bytes(os.urandom(10), "big") >> 1
    random_part = _last[1] + 1 if ms == _last[0] else fresh
    _last[0], _last[1] = ms, random_part
    value = (ms << 80) | random_part
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid_time(value: str) -> float:
    """The creation time of a ULID in unix seconds."""
    ms = 0
    for ch in value[:10]:
        ms = ms * 32 + _CROCKFORD.index(ch)
    return ms / 1000


def machine_id() -> str:
    return secrets.token_hex(7)


def lease_nonce() -> str:
    return secrets.token_hex(6)


def app_id() -> str:
    return _alnum(16)


def volume_id() -> str:
    return "vol_" + _alnum(16)


def snapshot_id() -> str:
    return "vs_" + _alnum(16)


def _alnum(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def is_machine_id(value: str) -> bool:
    return bool(_MACHINE_ID.match(value))


def is_ulid(value: str) -> bool:
    return bool(_ULID.match(value))


def is_app_name(value: str) -> bool:
    """DNS-label rules: the app name becomes a hostname (``<app>.<domain>``)."""
    return bool(_APP_NAME.match(value))


MAX_MACHINE_NAME = 255


def is_machine_name(value: str) -> bool:
    """Fly takes nearly any name (underscores, dots, capitals); roost refuses only what
    would break a store key: ``/``, NUL, or more than 255 characters."""
    return 0 < len(value) <= MAX_MACHINE_NAME and "/" not in value and "\x00" not in value


def is_metadata_key(value: str) -> bool:
    return bool(_METADATA_KEY.match(value))


def is_volume_id(value: str) -> bool:
    return bool(_VOLUME_ID.match(value))


def is_snapshot_id(value: str) -> bool:
    return bool(_SNAPSHOT_ID.match(value))


def is_volume_name(value: str) -> bool:
    """Fly's rule: up to 30 lowercase letters, digits and underscores."""
    return bool(_VOLUME_NAME.match(value))
