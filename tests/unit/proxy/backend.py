"""A small HTTP/1.1 server standing in for a machine's app, with keep-alive."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Backend:
    name: str
    server: asyncio.Server | None = None
    port: int = 0
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    replay_to: str = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)
                }
                body = await _read_body(reader, headers)
                self.requests.append((f"{method} {target}", headers, body))
                if not await self._answer(target, headers, body, reader, writer):
                    return
        finally:
            writer.close()

    async def _answer(
        self,
        target: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        path = target.split("?", 1)[0]
        if path == "/slow":
            await self.release.wait()
            return _send(writer, 200, f"slow {self.name}".encode())
        if path == "/echo":
            return _send(writer, 200, body)
        if path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for part in (b"one ", b"two ", b"three"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            writer.write(b"0\r\n\r\n")
            return True
        if path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
            await writer.drain()
            return False
        if path == "/replay" and self.replay_to:
            return _send(writer, 200, b"not me", extra=f"fly-replay: {self.replay_to}\r\n")
        if path == "/upgrade":
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n"
            )
            while data := await reader.read(65536):
                writer.write(data)
            return False
        if path == "/big":
            return _send(writer, 200, b"z" * 5_000_000)
        reply = (
            f"{self.name} {headers.get('x-forwarded-for', '')} {headers.get('fly-replay-src', '')}"
        )
        return _send(writer, 200, reply.strip().encode())


def _send(writer: asyncio.StreamWriter, status: int, body: bytes, extra: str = "") -> bool:
    writer.write(
        f"HTTP/1.1 {status} OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body
    )
    return True


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", ""):
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.readexactly(int(headers.get("content-length", "0")))
