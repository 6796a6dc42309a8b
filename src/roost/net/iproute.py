"""``ip -batch -``: several iproute2 commands for the cost of one exec (see PLATFORM.md)."""

from __future__ import annotations

import asyncio
import json


class NetworkError(Exception):
    """A network setup step failed; the message carries iproute2's error."""


async def ip_batch(commands: list[str], *, netns: str | None = None, force: bool = False) -> None:
    """Run ``commands`` (``ip`` syntax without the ``ip``), optionally inside ``netns``.

    ``force`` keeps going past failing commands and doesn't raise (for teardown).
    """
    argv = ["ip"]
    if netns is not None:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate("\n".join(commands).encode() + b"\n")
    if proc.returncode != 0 and not force:
        where = f" in netns {netns}" if netns else ""
        raise NetworkError(f"ip -batch{where} failed: {err.decode(errors='replace').strip()}")


async def ip_json(args: list[str]) -> list[dict[str, object]]:
    """``ip -json ARGS``: what iproute2 reports, parsed; an empty list when it fails."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "-json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0 or not out.strip():
        return []
    parsed = json.loads(out)
    return parsed if isinstance(parsed, list) else []
