"""Connections to machines and peer proxies notice a silent peer."""

from __future__ import annotations

import asyncio
import socket

from roost.proxy.upstream import UNACKED_TIMEOUT_MS, connect


async def test_connections_probe_for_a_dead_peer() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport, _ = await connect(asyncio.Protocol, "127.0.0.1", port)
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == UNACKED_TIMEOUT_MS
        transport.close()
    finally:
        server.close()
        await server.wait_closed()
