"""Sparse copies and the image stream: holes stay holes, data arrives whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roost.volumes import sparse

MIB = 1 << 20


def image(path: Path, size: int, writes: dict[int, bytes]) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    # Data at the start, one chunk that is all zeros though written, and a straggler
    # that is not chunk-aligned, in a 64 MiB file.
    return image(
        tmp_path / "source.img",
        64 * MIB,
        {0: b"superblock", 5 * MIB: bytes(sparse.CHUNK), 40 * MIB + 100: b"tail" * 1000},
    )


def test_a_copy_has_the_same_bytes_and_keeps_the_holes(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.img"
    copied = sparse.copy(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert target.stat().st_blocks * 512 <= 4 * sparse.CHUNK
    assert copied.data_bytes == 2 * sparse.CHUNK
    assert copied.digest == sparse.digest_of(target).digest == sparse.digest_of(source).digest


def test_the_stream_rebuilds_the_image(source: Path, tmp_path: Path) -> None:
    digest = sparse.digest_of(source).digest
    target = tmp_path / "received.img"
    receiver = sparse.Receiver(target)
    blob = b"".join(sparse.stream(source))
    for start in range(0, len(blob), 777):  # pieces of any size
        receiver.feed(blob[start : start + 777])
    receiver.finish(digest)
    assert target.read_bytes() == source.read_bytes()
    assert os.stat(target).st_blocks * 512 <= 4 * sparse.CHUNK


def test_a_stream_cut_short_or_altered_is_refused(source: Path, tmp_path: Path) -> None:
    digest = sparse.digest_of(source).digest
    blob = b"".join(sparse.stream(source))
    short = sparse.Receiver(tmp_path / "short.img")
    short.feed(blob[:-1])
    with pytest.raises(sparse.SparseError, match="cut short"):
        short.finish(digest)
    altered = sparse.Receiver(tmp_path / "altered.img")
    altered.feed(blob.replace(b"tail", b"TAIL", 1))
    with pytest.raises(sparse.SparseError, match="digest"):
        altered.finish(digest)
    extra = sparse.Receiver(tmp_path / "extra.img")
    with pytest.raises(sparse.SparseError, match="after the end"):
        extra.feed(blob + b"more")
    extra.abort()
    bad = sparse.Receiver(tmp_path / "bad.img")
    with pytest.raises(sparse.SparseError, match="malformed"):
        bad.feed(sparse.HEADER.pack(1, 10) + bytes(10))
    bad.abort()


def test_an_empty_image_is_one_end_header(tmp_path: Path) -> None:
    empty = image(tmp_path / "empty.img", 8 * MIB, {})
    assert list(sparse.stream(empty)) == [sparse.HEADER.pack(8 * MIB, 0)]
