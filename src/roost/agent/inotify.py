"""A minimal inotify binding (ctypes) that wakes asyncio code when files change."""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x00000002
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """One inotify instance; ``watch(dir, callback)`` calls back on changes inside dir."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._read)

    def watch(self, directory: Path, callback: Callable[[], None]) -> int:
        wd = _libc.inotify_add_watch(self._fd, str(directory).encode(), IN_MODIFY | IN_CREATE)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
        self._callbacks[wd] = callback
        return wd

    def unwatch(self, wd: int) -> None:
        if self._callbacks.pop(wd, None) is not None:
            _libc.inotify_rm_watch(self._fd, wd)

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        due: set[int] = set()
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            due.add(wd)
            offset += _EVENT.size + length
        for wd in due:
            callback = self._callbacks.get(wd)
            if callback is not None:
                callback()

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._callbacks.clear()
