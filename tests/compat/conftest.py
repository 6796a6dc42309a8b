"""Fixtures of the compatibility suite: the official Fly spec, and an API-only roost.

``api_alone`` is ``roost api`` on its own SQLite store with one registered host that no
agent serves: the whole API surface answers as it does in production, while nothing it
is asked can start a process, pull an image or send a packet beyond loopback (fuzzed
image names stay records). Tests that need machines to really run use ``roost``, the
real server fixture.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from roost.images.local_registry import free_port
from roost.store import SqliteStore
from roost.store.records import HostRecord, alive_key, host_key
from tests.fixtures.platform import roost_bin
from tests.fixtures.registry import run_async

OFFICIAL_SPEC = Path(__file__).parent / "spec/fly-machines-openapi.json"
"""Fly's own OpenAPI document for the Machines API, as published (the wire contract)."""
HOST_ID = "compat-host"


@dataclass
class ApiAlone:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )


@pytest.fixture(scope="session")
def official_spec() -> dict:
    return json.loads(OFFICIAL_SPEC.read_text())


@pytest.fixture(scope="module")
def api_alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiAlone]:
    root = tmp_path_factory.mktemp("api-alone")
    store_path = root / "store.db"
    run_async(_register_host(store_path))
    port = free_port()
    log = root / "api.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                roost_bin(),
                "--data-dir",
                str(root / "data"),
                "api",
                "--store",
                f"sqlite:{store_path}",
                "--listen",
                f"127.0.0.1:{port}",
                "--region",
                "test",
                "--no-controller",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, log)
        token = (root / "data/admin-token").read_text().strip()
        yield ApiAlone(url, token, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _register_host(path: Path) -> None:
    store = await SqliteStore.open(path)
    try:
        # Port 1 on loopback: every call to this host's agent is refused at once.
        host = HostRecord(
            id=HOST_ID, region="test", address="127.0.0.1:1", cpus=64, memory_mb=65536, disk_gb=500
        )
        await store.put(host_key(HOST_ID), host.to_json())
        await store.put(alive_key(HOST_ID), str(host.epoch))
    finally:
        await store.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"roost api exited early:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"roost api not ready:\n{log.read_text(errors='replace')}")
