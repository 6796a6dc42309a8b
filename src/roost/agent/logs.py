"""Machine logs: stdout and stderr lines, and platform events, per machine, on disk.

The runtime appends a machine's output to two plain files (the process writes them
directly, so logging never slows it or depends on the agent). The agent tails them —
woken by inotify — stamps each line with the time it was read, and appends it to the
machine's log store, next to the events the agent itself records (start, exit code,
restart, OOM kill). Read offsets are kept on disk, so an agent restart neither loses
nor repeats lines (lines written while the agent was down get the time of its return).

Storage is bounded: a machine's log is a few rotated NDJSON segments; the consumed part
of the output files is released with ``fallocate(PUNCH_HOLE)``, which frees the disk
blocks without moving the offset the running process appends at.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from roost.agent.inotify import Inotify

log = logging.getLogger("roost.agent")

SEGMENT_BYTES = 4 * 1024 * 1024
SEGMENTS_KEPT = 4
MAX_LINE = 16 * 1024
READ_CHUNK = 1024 * 1024
FOLLOW_QUEUE = 10_000
STREAMS = ("stdout", "stderr")

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


@dataclass(frozen=True, slots=True)
class LogRecord:
    timestamp: float
    machine: str
    stream: str
    """``stdout``, ``stderr`` or ``event``."""
    message: str


@dataclass
class Subscription:
    """New records of some machines, from the moment of subscribing."""

    store: LogStore
    wants: Callable[[str], bool]
    queue: asyncio.Queue[LogRecord] = field(
        default_factory=lambda: asyncio.Queue(maxsize=FOLLOW_QUEUE)
    )

    async def next(self) -> LogRecord:
        return await self.queue.get()

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.store._subscriptions.remove(self)


class LogStore:
    """Per-machine rotated NDJSON files under ``root/<machine>/``."""

    def __init__(
        self,
        root: Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        segments: int = SEGMENTS_KEPT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.segment_bytes = segment_bytes
        self.segments = segments
        self.clock = clock
        self._subscriptions: list[Subscription] = []
        root.mkdir(parents=True, exist_ok=True)

    def machine_dir(self, machine: str) -> Path:
        return self.root / machine

    def append(self, machine: str, records: Iterable[tuple[float, str, str]]) -> None:
        mdir = self.machine_dir(machine)
        mdir.mkdir(exist_ok=True)
        current = mdir / "current.ndjson"
        written = [LogRecord(t, machine, s, m) for t, s, m in records]
        if not written:
            return
        with current.open("a", encoding="utf-8") as f:
            for r in written:
                f.write(json.dumps({"t": r.timestamp, "s": r.stream, "m": r.message}) + "\n")
            size = f.tell()
        if size > self.segment_bytes:
            self._rotate(mdir)
        for subscription in self._subscriptions:
            for record in written:
                if subscription.wants(record.machine):
                    # A reader too slow to keep up loses lines rather than our memory.
                    with contextlib.suppress(asyncio.QueueFull):
                        subscription.queue.put_nowait(record)

    def event(self, machine: str, message: str) -> None:
        self.append(machine, [(self.clock(), "event", message)])

    def read(self, machine: str, *, since: float | None = None, limit: int = 0) -> list[LogRecord]:
        """Records in time order; with ``limit``, only the last ``limit`` of them."""
        mdir = self.machine_dir(machine)
        out: list[LogRecord] = []
        for path in self._segments(mdir):
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if since is not None and data["t"] < since:
                    continue
                out.append(LogRecord(data["t"], machine, data["s"], data["m"]))
        return out[-limit:] if limit else out

    def subscribe(self, wants: Callable[[str], bool]) -> Subscription:
        """New records of the machines ``wants`` accepts, from now on; close() when done."""
        subscription = Subscription(self, wants)
        self._subscriptions.append(subscription)
        return subscription

    def remove(self, machine: str) -> None:
        shutil.rmtree(self.machine_dir(machine), ignore_errors=True)

    def machines(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def size(self, machine: str) -> int:
        return sum(p.stat().st_size for p in self._segments(self.machine_dir(machine)))

    def _segments(self, mdir: Path) -> list[Path]:
        """Oldest first."""
        old = [mdir / f"{n}.ndjson" for n in range(self.segments, 0, -1)]
        return [p for p in [*old, mdir / "current.ndjson"] if p.exists()]

    def _rotate(self, mdir: Path) -> None:
        (mdir / f"{self.segments}.ndjson").unlink(missing_ok=True)
        for n in range(self.segments - 1, 0, -1):
            src = mdir / f"{n}.ndjson"
            if src.exists():
                src.rename(mdir / f"{n + 1}.ndjson")
        (mdir / "current.ndjson").rename(mdir / "1.ndjson")


@dataclass
class _Tail:
    machine: str
    paths: dict[str, Path]
    offsets: dict[str, int]
    partial: dict[str, bytes] = field(default_factory=dict)
    wd: int | None = None
    scheduled: bool = False


class ConsoleTailer:
    """Moves machine output from the runtime's files into the log store."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self._inotify: Inotify | None = None
        self._tails: dict[str, _Tail] = {}

    def follow(self, machine: str, paths: dict[str, Path]) -> None:
        if machine in self._tails:
            return
        if self._inotify is None:
            self._inotify = Inotify()
        tail = _Tail(machine, paths, self._load_offsets(machine))
        directory = next(iter(paths.values())).parent
        directory.mkdir(parents=True, exist_ok=True)
        tail.wd = self._inotify.watch(directory, lambda: self._schedule(tail))
        self._tails[machine] = tail
        self._drain(tail)

    def stop(self, machine: str) -> None:
        tail = self._tails.pop(machine, None)
        if tail is not None:
            self._drain(tail)
            if tail.wd is not None and self._inotify is not None:
                self._inotify.unwatch(tail.wd)

    def close(self) -> None:
        for machine in list(self._tails):
            self.stop(machine)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    def _schedule(self, tail: _Tail) -> None:
        # Many writes, one read: coalesce the wake-ups of one loop iteration.
        if not tail.scheduled:
            tail.scheduled = True
            asyncio.get_running_loop().call_soon(self._drain, tail)

    def _drain(self, tail: _Tail) -> None:
        tail.scheduled = False
        records: list[tuple[float, str, str]] = []
        now = self.store.clock()
        for stream, path in tail.paths.items():
            records += self._read_stream(tail, stream, path, now)
        if records:
            self.store.append(tail.machine, records)
            self._save_offsets(tail)

    def _read_stream(
        self, tail: _Tail, stream: str, path: Path, now: float
    ) -> list[tuple[float, str, str]]:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return []
        try:
            size = os.fstat(fd).st_size
            offset = tail.offsets.get(stream, 0)
            if size < offset:
                # A new file (the machine was recreated): start from its beginning.
                offset, tail.partial[stream] = 0, b""
            data = b""
            while offset < size:
                chunk = os.pread(fd, min(READ_CHUNK, size - offset), offset)
                if not chunk:
                    break
                data += chunk
                offset += len(chunk)
            lines = self._lines(tail, stream, data)
            tail.offsets[stream] = offset
            # What is in the store now can go from disk; a line not finished yet stays.
            committed = offset - len(tail.partial.get(stream, b""))
            block_end = committed - committed % 4096
            if block_end:
                _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, block_end)
        finally:
            os.close(fd)
        return [(now, stream, line) for line in lines]

    def _lines(self, tail: _Tail, stream: str, data: bytes) -> list[str]:
        buffered = tail.partial.get(stream, b"") + data
        *complete, rest = buffered.split(b"\n")
        while len(rest) > MAX_LINE:
            complete.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        tail.partial[stream] = rest
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in complete]

    def _offsets_path(self, machine: str) -> Path:
        return self.store.machine_dir(machine) / "offsets.json"

    def _load_offsets(self, machine: str) -> dict[str, int]:
        try:
            data = json.loads(self._offsets_path(machine).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {k: int(v) for k, v in data.items() if k in STREAMS}

    def _save_offsets(self, tail: _Tail) -> None:
        path = self._offsets_path(tail.machine)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Saved up to the last complete line: a partial one is read again after a restart.
        committed = {s: o - len(tail.partial.get(s, b"")) for s, o in tail.offsets.items()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(committed))
        tmp.replace(path)
