"""The ``fly-replay`` response header: ``region=ams;instance=ID;elsewhere=true;state=X``.

A machine answering with it asks the proxy to drop that response and send the same
request again to another machine: a given one (``instance``), one in given regions
(``region``, a comma list), or any other (``elsewhere``). ``state`` is echoed back in
``fly-replay-src``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Replay:
    instance: str | None = None
    regions: tuple[str, ...] = ()
    elsewhere: bool = False
    state: str = ""


def parse_replay(header: str) -> Replay:
    fields: dict[str, str] = {}
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip().strip('"')
    instance = fields.get("instance") or fields.get("prefer_instance") or None
    regions = tuple(r.strip().lower() for r in fields.get("region", "").split(",") if r.strip())
    return Replay(
        instance=instance,
        regions=regions,
        elsewhere=fields.get("elsewhere", "").lower() == "true",
        state=fields.get("state", ""),
    )
