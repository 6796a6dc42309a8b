"""What every roost process does the same way: serve an ASGI app on an address, log,
and run until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn


class RoleError(Exception):
    """A process cannot start; the message says why and what to do."""


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    return host.strip("[]") or "127.0.0.1", int(port)


class AsgiServer:
    """An ASGI app served by uvicorn on our event loop; ``address`` is where it listens
    (``host:port`` with the port filled in, ``[v6]:port`` for IPv6)."""

    def __init__(self, address: str, server: uvicorn.Server, loop_task: asyncio.Task[None]) -> None:
        self.address = address
        self._server = server
        self._loop_task = loop_task

    async def close(self) -> None:
        self._server.should_exit = True
        await self._loop_task
        await self._server.shutdown()


async def serve_asgi(
    app: Any,
    listen: str,
    *,
    what: str,
    default_port: int,
    graceful_shutdown: float | None = None,
) -> AsgiServer:
    """Serve ``app`` on ``listen`` (port 0 picks one). ``graceful_shutdown`` bounds how
    long calls in flight may finish when closing (unbounded if None)."""
    try:
        host, port = split_hostport(listen, default_port)
    except ValueError:
        raise RoleError(f"the {what} cannot listen on {listen!r}: give HOST:PORT") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RoleError(
            f"the {what} cannot listen on {listen}: {exc.strerror}; is another roost process "
            "using it? (pick another address)"
        ) from None
    sock.listen(1024)
    sock.setblocking(False)
    bound, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful_shutdown,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    address = f"[{bound}]:{bound_port}" if ":" in bound else f"{bound}:{bound_port}"
    return AsgiServer(address, server, asyncio.create_task(server.main_loop()))


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def run(main: Callable[[], Awaitable[None]], errors: tuple[type[Exception], ...]) -> None:
    """Run a process's main coroutine under uvloop; known errors end it with a message."""
    import uvloop

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per registry or store request drowns out what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        uvloop.run(main())
    except (RoleError, *errors) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
