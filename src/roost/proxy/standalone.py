"""``roost proxy``: the proxy alone, beside a server on this host.

It follows the server's store file (the SQLite store notices the server's commits) and
asks the server's API to start and stop machines, like any client.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from roost.proxy.control import RemoteControl
from roost.proxy.server import Proxy, ProxyConfig, ProxyError
from roost.store.sqlite import SqliteStore


async def serve(data_dir: Path, api_url: str, token: str, config: ProxyConfig) -> None:
    path = data_dir / "store.db"
    if not path.exists():
        raise ProxyError(f"no roost store at {path}: point --data-dir at a server's data dir")
    # Lease expiry belongs to the server; this process only reads.
    store = await SqliteStore.open(path, reaper=False, follow=True)
    control = RemoteControl(api_url, token)
    proxy = Proxy(store, control, config)
    try:
        await proxy.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await proxy.stop()
        await control.aclose()
        await store.close()


def run(data_dir: Path, api_url: str, token: str, config: ProxyConfig) -> None:
    import uvloop

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        uvloop.run(serve(data_dir, api_url, token, config))
    except ProxyError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
