"""Sparse image files: copying them, and carrying them between hosts as a stream.

A volume's image is mostly holes, so neither a copy nor a transfer should touch them.
Both work on *chunks*: ``CHUNK`` bytes at offsets that are multiples of ``CHUNK``, read
only where the file has data (``SEEK_DATA``/``SEEK_HOLE``), and left out when all zero.
A copy writes just those chunks (``cp --sparse=always``, in effect), so reading the copy
yields the very same chunks as reading the original.

The stream that carries an image between hosts is those chunks in order, each a header
(offset, length: two big-endian u64) and its bytes, then an end header (the file's size,
0). Its sha256 is an image's *digest*: computed when a snapshot is taken, and checked
by the host that receives it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024
HEADER = struct.Struct(">QQ")
_ZEROS = bytes(CHUNK)


class SparseError(Exception):
    """A stream that is malformed, cut short, or not the one its digest names."""


@dataclass(frozen=True, slots=True)
class Copied:
    digest: str
    """``sha256:`` and the hex digest of the image's stream."""
    data_bytes: int
    """Bytes in non-zero chunks: what the copy really takes on disk."""


def chunks(path: Path) -> Iterator[tuple[int, bytes]]:
    """The image's non-zero chunks, in offset order."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after offset
                    return
                raise
            hole = os.lseek(fd, start, os.SEEK_HOLE)
            offset = start - start % CHUNK
            while offset < hole:
                data = os.pread(fd, min(CHUNK, size - offset), offset)
                if data != _ZEROS[: len(data)]:
                    yield offset, data
                offset += CHUNK
    finally:
        os.close(fd)


def stream(path: Path) -> Iterator[bytes]:
    """The image as a stream (see the module docstring), in pieces."""
    for offset, data in chunks(path):
        yield HEADER.pack(offset, len(data)) + data
    yield HEADER.pack(path.stat().st_size, 0)


def copy(source: Path, target: Path) -> Copied:
    """A sparse copy of ``source`` at ``target`` (replaced), synced to disk."""
    digest = hashlib.sha256()
    written = 0
    with open(target, "wb") as out:
        for offset, data in chunks(source):
            out.seek(offset)
            out.write(data)
            digest.update(HEADER.pack(offset, len(data)))
            digest.update(data)
            written += len(data)
        size = source.stat().st_size
        out.truncate(size)
        digest.update(HEADER.pack(size, 0))
        out.flush()
        os.fsync(out.fileno())
    return Copied("sha256:" + digest.hexdigest(), written)


def digest_of(path: Path) -> Copied:
    digest = hashlib.sha256()
    written = 0
    for piece in stream(path):
        digest.update(piece)
        written += max(0, len(piece) - HEADER.size)
    return Copied("sha256:" + digest.hexdigest(), written)


class Receiver:
    """Writes a stream, fed in pieces of any size, into a fresh sparse file."""

    def __init__(self, target: Path) -> None:
        self._out = open(target, "wb")  # noqa: SIM115 (closed by finish or abort)
        self._digest = hashlib.sha256()
        self._buffer = bytearray()
        self._ended = False

    def feed(self, piece: bytes) -> None:
        if self._ended and piece:
            raise SparseError("data after the end of the image stream")
        self._digest.update(piece)
        self._buffer += piece
        while len(self._buffer) >= HEADER.size and not self._ended:
            offset, length = HEADER.unpack_from(self._buffer)
            if length == 0:
                self._out.truncate(offset)
                self._ended = True
                del self._buffer[: HEADER.size]
                if self._buffer:
                    raise SparseError("data after the end of the image stream")
                return
            if length > CHUNK or offset % CHUNK:
                raise SparseError(f"malformed image stream: a chunk of {length} at {offset}")
            if len(self._buffer) < HEADER.size + length:
                return
            self._out.seek(offset)
            self._out.write(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]

    def finish(self, digest: str) -> None:
        """Check the stream was whole and is the one ``digest`` names; sync the file."""
        try:
            if not self._ended:
                raise SparseError("the image stream was cut short")
            got = "sha256:" + self._digest.hexdigest()
            if got != digest:
                raise SparseError(f"the image stream's digest is {got}, not {digest}")
            self._out.flush()
            os.fsync(self._out.fileno())
        finally:
            self._out.close()

    def abort(self) -> None:
        self._out.close()
