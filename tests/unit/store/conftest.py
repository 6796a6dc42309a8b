"""The ``store`` fixture, parametrized over every Store backend.

To add a backend, append a :class:`Backend` to ``BACKENDS``; the contract tests pick it
up unchanged. Optional capabilities (such as forcing compaction) are ``None`` when a
backend lacks them, and tests needing them skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from roost.store import SqliteStore, Store


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[Path], Awaitable[Store]]
    compact: Callable[[Store, int], Awaitable[None]] | None = None


async def _sqlite_compact(store: Store, revision: int) -> None:
    assert isinstance(store, SqliteStore)
    await store.compact(revision)


BACKENDS = [
    Backend("sqlite-memory", lambda _: SqliteStore.open(":memory:"), _sqlite_compact),
    Backend("sqlite-file", lambda tmp: SqliteStore.open(tmp / "store.db"), _sqlite_compact),
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
