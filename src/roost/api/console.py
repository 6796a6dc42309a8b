"""Carrying a machine's terminal over a WebSocket (see ``io_routes.machine_console``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

from starlette.websockets import WebSocket, WebSocketDisconnect

from roost.runtime.console import Console

CLOSE_REFUSED = 4000
"""Our close code for a console that could not start; the reason says why."""
READ_SIZE = 65536
QUEUED_READS = 64
WRITE_RETRY = 0.01


class ConsoleBridge:
    """Copies terminal output to the client and client input to the terminal."""

    def __init__(self, websocket: WebSocket, console: Console) -> None:
        self.websocket = websocket
        self.console = console
        self.loop = asyncio.get_running_loop()
        self.output: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUED_READS)
        self.reading = False

    async def run(self) -> None:
        """Until the process exits or the client leaves."""
        self._read_more()
        sender = asyncio.ensure_future(self._send())
        receiver = asyncio.ensure_future(self._receive())
        try:
            await asyncio.wait([sender, receiver], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._pause()
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    def _read_more(self) -> None:
        if not self.reading:
            self.reading = True
            self.loop.add_reader(self.console.master, self._readable)

    def _pause(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.console.master)

    def _readable(self) -> None:
        try:
            data = os.read(self.console.master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: the process and everything on its terminal are gone
        if not data:
            self._pause()
            self.output.put_nowait(None)
            return
        self.output.put_nowait(data)
        if self.output.full():
            # The client reads slower than the machine writes: hold the machine back.
            self._pause()

    async def _send(self) -> None:
        while (data := await self.output.get()) is not None:
            await self.websocket.send_bytes(data)
            if self.output.empty():
                self._read_more()
        code = await self.console.wait()
        await self.websocket.send_text(json.dumps({"exit_code": code}))
        await self.websocket.close()

    async def _receive(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes"):
                    await self._write(message["bytes"])
                elif message.get("text"):
                    self._control(message["text"])

    def _control(self, text: str) -> None:
        try:
            size = json.loads(text)["resize"]
            self.console.resize(int(size["cols"]), int(size["rows"]))
        except (ValueError, KeyError, TypeError):
            pass  # not a message we know: ignore it, as terminals ignore odd bytes

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.console.master, view) :]
            except BlockingIOError:
                # The pty's input buffer is full until the program reads it.
                await asyncio.sleep(WRITE_RETRY)


async def pump_console(websocket: WebSocket, console: Console) -> None:
    await ConsoleBridge(websocket, console).run()
