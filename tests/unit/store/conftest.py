"""The ``store`` fixture, parametrized over every Store backend.

To add a backend, append a :class:`Backend` to ``BACKENDS``; the contract tests pick it
up unchanged. Optional capabilities (such as forcing compaction) are ``None`` when a
backend lacks them, and tests needing them skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from roost.store import EtcdStore, SqliteStore, Store
from roost.store.etcd_server import ETCD_BINARY, LocalEtcd, free_port, tmpfs_dir


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[Path], Awaitable[Store]]
    compact: Callable[[Store, int], Awaitable[None]] | None = None


async def _sqlite_compact(store: Store, revision: int) -> None:
    assert isinstance(store, SqliteStore)
    await store.compact(revision)


class SharedEtcd:
    """One etcd for the whole session, started by the first test that needs it.

    Started lazily from inside a test (so sessions without etcd tests never pay for it)
    and stopped by :func:`_stop_shared_etcd` at the end of the session.
    """

    def __init__(self) -> None:
        self.server: LocalEtcd | None = None
        self.root: Path | None = None

    async def url(self) -> str:
        if not os.access(ETCD_BINARY, os.X_OK):
            pytest.skip(f"needs {ETCD_BINARY} (Debian package etcd-server)")
        if self.server is None or not self.server.running:
            self.stop()
            self.root = tmpfs_dir("roost-etcd-")
            server = LocalEtcd(self.root / "data", client_port=free_port(), peer_port=free_port())
            await server.start()
            self.server = server
        return self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.kill_now()
            self.server = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


shared_etcd = SharedEtcd()


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_etcd() -> Iterator[None]:
    yield
    shared_etcd.stop()


async def _etcd_open(_: Path) -> Store:
    """A store on the shared etcd, emptied: the contract tests assume an empty store."""
    url = await shared_etcd.url()
    store = EtcdStore([url])
    try:
        await store.delete("", prefix=True)
        # Leases outlive their keys; one expiring later must not surprise another test.
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            leases = (await http.post("/v3/lease/leases", json={})).json().get("leases", [])
        for lease in leases:
            await store.revoke_lease(int(lease["ID"]))
    except BaseException:
        await store.close()
        raise
    return store


async def _etcd_compact(store: Store, revision: int) -> None:
    assert isinstance(store, EtcdStore)
    await store.compact(revision)


BACKENDS = [
    Backend("sqlite-memory", lambda _: SqliteStore.open(":memory:"), _sqlite_compact),
    Backend("sqlite-file", lambda tmp: SqliteStore.open(tmp / "store.db"), _sqlite_compact),
    Backend("etcd", _etcd_open, _etcd_compact),
]


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.param
    return backend


@pytest.fixture
async def store(backend: Backend, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await backend.open(tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def compact(backend: Backend, store: Store) -> Callable[[int], Awaitable[None]]:
    """Force compaction of history up to and including a revision."""
    hook = backend.compact
    if hook is None:
        pytest.skip(f"{backend.name} cannot force compaction")

    async def run(revision: int) -> None:
        await hook(store, revision)

    return run
