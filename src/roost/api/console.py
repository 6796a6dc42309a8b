"""Carrying a machine's terminal over a WebSocket (see ``io_routes.machine_console``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

CLOSE_REFUSED = 4000
"""Our close code for a console that could not start; the reason says why."""


class Terminal(Protocol):
    """A terminal session in a machine, on this host or another."""

    async def read(self) -> bytes | None:
        """The next output, or None once the program and its terminal are gone."""
        ...

    async def write(self, data: bytes) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    async def wait(self) -> int:
        """The program's exit code."""
        ...

    def close(self) -> None: ...


async def pump_console(websocket: WebSocket, terminal: Terminal) -> None:
    """Copy both ways until the program exits or the client leaves.

    Binary messages carry terminal bytes both ways; a text message
    ``{"resize": {"cols": C, "rows": R}}`` resizes; the server ends with the text
    ``{"exit_code": N}`` and closes.
    """
    sender = asyncio.ensure_future(_send(websocket, terminal))
    receiver = asyncio.ensure_future(_receive(websocket, terminal))
    try:
        await asyncio.wait([sender, receiver], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)


async def _send(websocket: WebSocket, terminal: Terminal) -> None:
    while (data := await terminal.read()) is not None:
        await websocket.send_bytes(data)
    code = await terminal.wait()
    await websocket.send_text(json.dumps({"exit_code": code}))
    await websocket.close()


async def _receive(websocket: WebSocket, terminal: Terminal) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                await terminal.write(message["bytes"])
            elif message.get("text"):
                _control(terminal, message["text"])


def _control(terminal: Terminal, text: str) -> None:
    try:
        size = json.loads(text)["resize"]
        terminal.resize(int(size["cols"]), int(size["rows"]))
    except (ValueError, KeyError, TypeError):
        pass  # not a message we know: ignore it, as terminals ignore odd bytes
