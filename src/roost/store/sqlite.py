"""Embedded SQLite backend of the Store contract, for single-node installs.

One connection, used only from one worker thread: writes are serialised there and their
fsyncs never block the event loop. Watchers stream from an in-memory tail of recent
revisions and fall back to the ``history`` table when they lag behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import sqlite3
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from roost.store.base import (
    KV,
    Compacted,
    Compare,
    Delete,
    LeaseNotFound,
    Put,
    RangeResult,
    Store,
    StoreError,
    StoreUnavailable,
    TxnResult,
    WatchEvent,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    revision INTEGER NOT NULL,
    compact_revision INTEGER NOT NULL
);
INSERT INTO meta VALUES (0, 0, 0);
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE history (
    revision INTEGER NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('put', 'delete')),
    value TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    prev_value TEXT,
    prev_create_revision INTEGER,
    prev_mod_revision INTEGER,
    prev_version INTEGER,
    prev_lease INTEGER,
    PRIMARY KEY (revision, key)
) WITHOUT ROWID;
CREATE TABLE leases (
    id INTEGER PRIMARY KEY,
    ttl REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX leases_expiry ON leases (expires_at);
"""

_KV_COLUMNS = "key, value, create_revision, mod_revision, version, lease"
_HISTORY_COLUMNS = (
    "revision, key, type, value, create_revision, version, lease, prev_value, "
    "prev_create_revision, prev_mod_revision, prev_version, prev_lease"
)

# Revisions kept in memory for watchers; laggards read the rest from the history table.
_TAIL_REVISIONS = 1024
# Revisions a lagging watcher reads from the history table per round trip.
_REPLAY_WINDOW = 1000

# (revision, key, type, value, create_revision, version, lease,
#  prev_value, prev_create_revision, prev_mod_revision, prev_version, prev_lease)
_HistoryRow = tuple[
    int, str, str, str, int, int, int, str | None, int | None, int | None, int | None, int | None
]


def prefix_end(prefix: str) -> bytes | None:
    """The smallest byte string greater than every key starting with ``prefix``.

    Computed on the UTF-8 bytes like etcd's ``GetPrefixRangeEnd``; ``None`` means no
    upper bound. The result may not be valid UTF-8, so SQL binds it as a blob and casts.
    """
    end = bytearray(prefix.encode())
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return None


def _range_clause(prefix: str) -> tuple[str, tuple[str | bytes, ...]]:
    end = prefix_end(prefix)
    if end is None:
        return "key >= ?", (prefix,)
    return "key >= ? AND key < CAST(? AS TEXT)", (prefix, end)


def _event(row: _HistoryRow) -> WatchEvent:
    rev, key, kind, value, crev, version, lease, pvalue, pcrev, pmrev, pversion, please = row
    prev = None
    if pvalue is not None:
        prev = KV(key, pvalue, cast(int, pcrev), cast(int, pmrev), cast(int, pversion), please or 0)
    kv = KV(key, value, crev, rev, version, lease)
    return WatchEvent(cast(Literal["put", "delete"], kind), kv, prev)


def _holds(compare: Compare, kv: KV | None) -> bool:
    if kv is None and compare.target == "value":
        # As etcd: a missing key has no value, so every value comparison on it fails.
        return False
    actual: int | str = 0 if kv is None else getattr(kv, compare.target)
    operand = compare.operand
    match compare.op:
        case "==":
            return actual == operand
        case "!=":
            return actual != operand
        case "<":
            return actual < operand  # type: ignore[operator]
        case ">":
            return actual > operand  # type: ignore[operator]
    raise ValueError(f"unknown compare op {compare.op!r}")


def _check_compares(compares: Sequence[Compare]) -> None:
    for c in compares:
        want = str if c.target == "value" else int
        if not isinstance(c.operand, want) or isinstance(c.operand, bool):
            raise TypeError(f"{c.target} compares need a {want.__name__} operand: {c!r}")
        if c.op not in ("==", "!=", "<", ">"):
            raise ValueError(f"unknown compare op {c.op!r}")


def _check_ops(ops: Sequence[Put | Delete]) -> None:
    """Reject what etcd rejects: a key written twice, or written and deleted, in one txn."""
    puts = [op.key for op in ops if isinstance(op, Put)]
    if "" in puts:
        raise ValueError("empty key")
    if len(set(puts)) != len(puts):
        raise ValueError("duplicate key in txn")
    for op in ops:
        if isinstance(op, Delete):
            for key in puts:
                if key.startswith(op.key) if op.prefix else key == op.key:
                    raise ValueError(f"key {key!r} is both put and deleted in one txn")


@dataclass(eq=False)
class _Watcher:
    prefix: str
    next_revision: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: bool = False


class SqliteStore(Store):
    """The Store contract on one SQLite file (or ``":memory:"``).

    ``await store.start()`` (or ``await SqliteStore.open(...)``) before use; ``close()``
    when done. Lease expiry follows ``clock`` (wall-clock seconds). Tests driving a fake
    clock pass ``reaper=False`` and call :meth:`expire_leases` themselves, so nothing else
    expires leases behind their back.

    ``follow`` makes the store notice commits made by *other processes* on the same file
    (a standalone ``roost proxy`` beside ``roost server``): it checks SQLite's
    ``data_version`` every ``follow_interval`` seconds and feeds their history rows to
    this process's watchers.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        history_retention: int = 10_000,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        reaper: bool = True,
        follow: bool = False,
        follow_interval: float = 0.02,
    ) -> None:
        if history_retention < 1:
            raise ValueError("history_retention must be at least 1")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self._path = str(path)
        self._clock = clock
        self._retention = history_retention
        # Compacting in batches keeps the per-write cost of retention negligible.
        self._compact_step = max(1, history_retention // 10)
        self._synchronous = synchronous
        self._run_reaper = reaper
        self._follow = follow
        self._follow_interval = follow_interval
        self._follower: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roost-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None
        self._reaper_wake = asyncio.Event()
        # Watchers by prefix, and how many use each prefix length, so a commit finds the
        # watchers it concerns without visiting the others.
        self._watchers: dict[str, set[_Watcher]] = {}
        self._prefix_lengths: Counter[int] = Counter()
        self._tail: deque[tuple[int, list[WatchEvent]]] = deque(
            maxlen=min(_TAIL_REVISIONS, history_retention)
        )
        self._published = 0
        self._compacted = 0

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        history_retention: int = 10_000,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        reaper: bool = True,
        follow: bool = False,
    ) -> SqliteStore:
        """Construct and start a store."""
        store = cls(
            path,
            clock=clock,
            history_retention=history_retention,
            synchronous=synchronous,
            reaper=reaper,
            follow=follow,
        )
        try:
            await store.start()
        except BaseException:
            await store.close()
            raise
        return store

    async def start(self) -> None:
        """Open the database, reap leases that expired while closed, start the reaper."""
        if self._loop is not None:
            raise RuntimeError("store already started")
        if self._closed:
            raise StoreUnavailable("store is closed")
        self._loop = asyncio.get_running_loop()
        self._published, self._compacted = await self._run(self._open_sync)
        await self.expire_leases()
        if self._run_reaper:
            self._reaper = asyncio.create_task(self._reap_forever(), name="roost-sqlite-reaper")
        if self._follow:
            self._follower = asyncio.create_task(self._follow_others(), name="roost-sqlite-follow")

    @property
    def active_watchers(self) -> int:
        return sum(self._prefix_lengths.values())

    # Store contract

    async def get(self, key: str) -> KV | None:
        return await self._run(self._get_sync, key)

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        return await self._run(self._range_sync, prefix, limit)

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        ops = [Put(key, value, lease)]
        _check_ops(ops)
        return await self._run(self._write_sync, self._clock(), ops)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        return await self._run(self._write_sync, self._clock(), [Delete(key, prefix)])

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Put | Delete] = (),
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        _check_compares(compare)
        _check_ops(success)
        _check_ops(failure)
        return await self._run(
            self._txn_sync, self._clock(), list(compare), list(success), list(failure)
        )

    async def watch(self, prefix: str, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        if from_revision < 1:
            raise ValueError("from_revision must be at least 1")
        self._check_open()
        if from_revision <= self._compacted:
            raise Compacted(self._compacted)
        watcher = _Watcher(prefix, from_revision)
        self._watchers.setdefault(prefix, set()).add(watcher)
        self._prefix_lengths[len(prefix)] += 1
        try:
            while True:
                self._check_open()
                if watcher.next_revision > self._published:
                    # No await between the check above and clearing, so no wake-up is lost.
                    watcher.wake.clear()
                    watcher.waiting = True
                    try:
                        await watcher.wake.wait()
                    finally:
                        watcher.waiting = False
                elif self._tail and watcher.next_revision >= self._tail[0][0]:
                    skip = watcher.next_revision - self._tail[0][0]
                    # A copy: the tail rotates while the consumer holds an event.
                    for revision, events in list(itertools.islice(self._tail, skip, None)):
                        for event in events:
                            if event.kv.key.startswith(prefix):
                                yield event
                        watcher.next_revision = revision + 1
                else:
                    upto, compacted, rows = await self._run(
                        self._history_sync, prefix, watcher.next_revision
                    )
                    if watcher.next_revision <= compacted:
                        raise Compacted(compacted)
                    for row in rows:
                        yield _event(row)
                    watcher.next_revision = upto + 1
        finally:
            self._unregister(watcher)

    async def grant_lease(self, ttl: float) -> int:
        if not ttl > 0:
            raise ValueError("lease ttl must be positive")
        lease = await self._run(self._grant_sync, ttl, self._clock())
        # The new lease may expire before whatever the reaper is sleeping towards.
        self._reaper_wake.set()
        return lease

    async def keepalive(self, lease: int) -> None:
        # No reaper wake-up: a renewal only moves an expiry later.
        await self._run(self._keepalive_sync, lease, self._clock())

    async def revoke_lease(self, lease: int) -> None:
        await self._run(self._revoke_sync, lease)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._reaper, self._follower):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.wake.set()
        if self._loop is not None:
            # Queued behind any write still in flight, so those finish first.
            await self._loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    # SQLite-only operations

    async def expire_leases(self) -> int:
        """Revoke every lease whose expiry is at or before ``clock()``; how many were."""
        return await self._run(self._expire_sync, self._clock())

    async def compact(self, revision: int) -> None:
        """Drop history at and before ``revision``; watching from there raises Compacted."""
        compacted = await self._run(self._compact_sync, revision)
        self._compacted = max(self._compacted, compacted)

    # Event-loop side

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")
        if self._loop is None:
            raise StoreError("store not started; await start() first")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        assert self._loop is not None
        try:
            return await self._loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(str(e)) from e

    def _unregister(self, watcher: _Watcher) -> None:
        same_prefix = self._watchers[watcher.prefix]
        same_prefix.discard(watcher)
        if not same_prefix:
            del self._watchers[watcher.prefix]
        size = len(watcher.prefix)
        self._prefix_lengths[size] -= 1
        if not self._prefix_lengths[size]:
            del self._prefix_lengths[size]

    def _publish(self, revision: int, events: list[WatchEvent]) -> None:
        contiguous = revision == self._published + 1
        if not contiguous:
            # Never expected; dropping the tail makes watchers re-read from the table.
            self._tail.clear()
        self._tail.append((revision, events))
        self._published = revision
        if contiguous:
            prefixes = {e.kv.key[:size] for size in self._prefix_lengths for e in events}
            concerned = [w for p in prefixes for w in self._watchers.get(p, ())]
        else:
            concerned = [w for ws in self._watchers.values() for w in ws]
        for watcher in concerned:
            if watcher.waiting and watcher.next_revision <= revision:
                if contiguous:
                    # Every revision since it started waiting was published here without
                    # waking it, so none concerned it: it can skip straight to this one.
                    watcher.next_revision = revision
                watcher.waiting = False
                watcher.wake.set()

    async def _follow_others(self) -> None:
        seen = await self._run(self._data_version_sync)
        while True:
            await asyncio.sleep(self._follow_interval)
            try:
                version = await self._run(self._data_version_sync)
                if version == seen:
                    continue
                seen = version
                revision, _ = await self._run(self._meta_sync)
                while self._published < revision:
                    start = self._published + 1
                    upto = min(revision, start + _REPLAY_WINDOW - 1)
                    rows = await self._run(self._rows_sync, start, upto)
                    by_revision: dict[int, list[WatchEvent]] = {}
                    for row in rows:
                        by_revision.setdefault(row[0], []).append(_event(row))
                    for rev in range(start, upto + 1):
                        # A revision compacted away publishes as empty: watchers that
                        # needed it re-read the table and get Compacted from there.
                        self._publish(rev, by_revision.get(rev, []))
            except StoreError:
                if self._closed:
                    return
                log.exception("following other writers failed; retrying")

    def _set_compacted(self, revision: int) -> None:
        self._compacted = max(self._compacted, revision)

    async def _reap_forever(self) -> None:
        while True:
            self._reaper_wake.clear()
            try:
                soonest = await self._run(self._soonest_expiry_sync)
                if soonest is None:
                    await self._reaper_wake.wait()
                    continue
                delay = soonest - self._clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._reaper_wake.wait(), delay)
                    continue
                await self.expire_leases()
            except Exception:
                if self._closed:
                    return
                log.exception("lease reaper failed; retrying")
                await asyncio.sleep(1)

    # Worker thread side: everything below runs on the executor's only thread.

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def _open_sync(self) -> tuple[int, int]:
        conn = sqlite3.connect(self._path, isolation_level=None)
        self._conn = conn
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode not in ("wal", "memory"):
            raise StoreError(f"{self._path}: cannot use WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA busy_timeout = 5000")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 0:
            conn.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
        elif version != SCHEMA_VERSION:
            raise StoreError(f"{self._path}: unknown schema version {version}")
        return self._meta_sync()

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _meta_sync(self) -> tuple[int, int]:
        return cast(
            tuple[int, int],
            self._db.execute("SELECT revision, compact_revision FROM meta").fetchone(),
        )

    def _get_sync(self, key: str) -> KV | None:
        row = self._db.execute(f"SELECT {_KV_COLUMNS} FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else KV(*row)

    def _select_sync(self, prefix: str, limit: int) -> list[KV]:
        where, args = _range_clause(prefix)
        rows = self._db.execute(
            f"SELECT {_KV_COLUMNS} FROM kv WHERE {where} ORDER BY key LIMIT ?",
            (*args, limit if limit > 0 else -1),
        )
        return [KV(*row) for row in rows]

    def _range_sync(self, prefix: str, limit: int) -> RangeResult:
        # Single connection on a single thread: no write can land between the two reads.
        revision, _ = self._meta_sync()
        return RangeResult(self._select_sync(prefix, limit), revision)

    def _history_sync(self, prefix: str, start: int) -> tuple[int, int, list[_HistoryRow]]:
        revision, compacted = self._meta_sync()
        upto = min(start + _REPLAY_WINDOW - 1, revision)
        if start <= compacted:
            return upto, compacted, []
        where, args = _range_clause(prefix)
        rows = self._db.execute(
            f"SELECT {_HISTORY_COLUMNS} FROM history "
            f"WHERE revision BETWEEN ? AND ? AND {where} ORDER BY revision, key",
            (start, upto, *args),
        ).fetchall()
        return upto, compacted, rows

    def _data_version_sync(self) -> int:
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        return cast(int, version)

    def _rows_sync(self, start: int, upto: int) -> list[_HistoryRow]:
        return self._db.execute(
            f"SELECT {_HISTORY_COLUMNS} FROM history WHERE revision BETWEEN ? AND ? "
            "ORDER BY revision, key",
            (start, upto),
        ).fetchall()

    def _lease_alive_sync(self, lease: int, now: float) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM leases WHERE id = ? AND expires_at > ?", (lease, now)
        ).fetchone()
        return row is not None

    def _write_sync(self, now: float, ops: Sequence[Put | Delete]) -> int:
        return self._commit_sync(lambda revision, rows: self._apply_sync(revision, now, ops, rows))

    def _txn_sync(
        self,
        now: float,
        compares: Sequence[Compare],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete],
    ) -> TxnResult:
        succeeded = False

        def apply(revision: int, rows: list[_HistoryRow]) -> None:
            nonlocal succeeded
            succeeded = all(_holds(c, self._get_sync(c.key)) for c in compares)
            self._apply_sync(revision, now, success if succeeded else failure, rows)

        revision = self._commit_sync(apply)
        return TxnResult(succeeded, revision)

    def _commit_sync(self, apply: Callable[[int, list[_HistoryRow]], None]) -> int:
        """Run ``apply`` in one write transaction; its changes, if any, become one revision."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            revision, compacted = self._meta_sync()
            rows: list[_HistoryRow] = []
            apply(revision + 1, rows)
            if rows:
                revision += 1
                rows.sort(key=lambda row: row[1])
                db.executemany(f"INSERT INTO history VALUES ({', '.join('?' * 12)})", rows)
                db.execute("UPDATE meta SET revision = ?", (revision,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if rows:
            self._call_on_loop(self._publish, revision, [_event(row) for row in rows])
            if revision - compacted >= self._retention + self._compact_step:
                try:
                    self._compact_sync(revision - self._retention)
                except sqlite3.Error:
                    # The write is committed; compaction retries on a later one.
                    log.exception("history compaction failed")
        return revision

    def _apply_sync(
        self, revision: int, now: float, ops: Sequence[Put | Delete], rows: list[_HistoryRow]
    ) -> None:
        db = self._db
        for op in ops:
            if isinstance(op, Put):
                if op.lease and not self._lease_alive_sync(op.lease, now):
                    raise LeaseNotFound(f"lease {op.lease} not found")
                old = self._get_sync(op.key)
                create, version = (
                    (revision, 1) if old is None else (old.create_revision, old.version + 1)
                )
                db.execute(
                    "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?, ?)",
                    (op.key, op.value, create, revision, version, op.lease),
                )
                rows.append(
                    (revision, op.key, "put", op.value, create, version, op.lease, *_prev(old))
                )
            else:
                olds = self._select_sync(op.key, 0) if op.prefix else [self._get_sync(op.key)]
                for old in olds:
                    if old is not None:
                        db.execute("DELETE FROM kv WHERE key = ?", (old.key,))
                        rows.append((revision, old.key, "delete", "", 0, 0, 0, *_prev(old)))

    def _grant_sync(self, ttl: float, now: float) -> int:
        while True:
            lease = secrets.randbits(63)
            if lease == 0:
                continue
            try:
                self._db.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease, ttl, now + ttl))
            except sqlite3.IntegrityError:
                continue
            return lease

    def _keepalive_sync(self, lease: int, now: float) -> None:
        # An expired lease is gone even before the reaper deletes it, as in etcd.
        renewed = self._db.execute(
            "UPDATE leases SET expires_at = ? + ttl WHERE id = ? AND expires_at > ?",
            (now, lease, now),
        ).rowcount
        if not renewed:
            raise LeaseNotFound(f"lease {lease} not found")

    def _revoke_sync(self, lease: int) -> None:
        db = self._db

        def apply(revision: int, rows: list[_HistoryRow]) -> None:
            olds = db.execute(
                f"SELECT {_KV_COLUMNS} FROM kv WHERE lease = ? ORDER BY key", (lease,)
            ).fetchall()
            db.execute("DELETE FROM kv WHERE lease = ?", (lease,))
            db.execute("DELETE FROM leases WHERE id = ?", (lease,))
            rows.extend((revision, old[0], "delete", "", 0, 0, 0, *_prev(KV(*old))) for old in olds)

        self._commit_sync(apply)

    def _expire_sync(self, now: float) -> int:
        expired = [
            lease
            for (lease,) in self._db.execute(
                "SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at, id", (now,)
            ).fetchall()
        ]
        # One revision per lease, as etcd revokes each expired lease separately.
        for lease in expired:
            self._revoke_sync(lease)
        return len(expired)

    def _soonest_expiry_sync(self) -> float | None:
        (soonest,) = self._db.execute("SELECT min(expires_at) FROM leases").fetchone()
        return cast(float | None, soonest)

    def _compact_sync(self, revision: int) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            current, compacted = self._meta_sync()
            if revision > current:
                raise ValueError(f"cannot compact revision {revision} beyond current {current}")
            if revision > compacted:
                db.execute("DELETE FROM history WHERE revision <= ?", (revision,))
                db.execute("UPDATE meta SET compact_revision = ?", (revision,))
                compacted = revision
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._call_on_loop(self._set_compacted, compacted)
        return compacted

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        # A closed loop (shut down without close()) has nobody left to notify.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)


def _prev(kv: KV | None) -> tuple[str | None, int | None, int | None, int | None, int | None]:
    if kv is None:
        return (None, None, None, None, None)
    return (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
