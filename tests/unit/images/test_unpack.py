from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from roost.images.base import PullError
from roost.images.unpack import apply_layer, tree_size, unpack_layers
from tests.unit.images.fakes import directory, file, hardlink, layer, symlink


def write_layers(tmp_path: Path, *layers: bytes) -> list[Path]:
    paths = []
    for i, data in enumerate(layers):
        path = tmp_path / f"layer{i}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def unpack(tmp_path: Path, *layers: bytes) -> Path:
    dest = tmp_path / "images" / "rootfs"
    unpack_layers(write_layers(tmp_path, *layers), dest)
    return dest


def names(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_files_dirs_and_symlinks(tmp_path: Path, compress: bool) -> None:
    root = unpack(
        tmp_path,
        layer(
            directory("./"),
            directory("./bin"),
            file("./bin/busybox", b"#!", mode=0o755),
            symlink("./bin/sh", "/bin/busybox"),
            file("etc/hostname", b"roost\n"),  # parent directory not in the tar
            compress=compress,
        ),
    )
    assert names(root) == {"bin", "bin/busybox", "bin/sh", "etc", "etc/hostname"}
    assert (root / "etc/hostname").read_bytes() == b"roost\n"
    assert stat.S_IMODE((root / "bin/busybox").stat().st_mode) == 0o755
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


def test_keeps_special_mode_bits(tmp_path: Path) -> None:
    root = unpack(
        tmp_path,
        layer(directory("tmp", mode=0o1777), file("bin/su", b"x", mode=0o4755)),
        layer(directory("srv", mode=0o2775)),
    )
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((root / "srv").stat().st_mode) == 0o2775


def test_whiteout_deletes_files_and_trees(tmp_path: Path) -> None:
    root = unpack(
        tmp_path,
        layer(file("a/keep"), file("a/gone"), file("d/x/y"), file("d/z")),
        layer(file("a/.wh.gone"), file(".wh.d"), file("a/.wh.never-existed")),
    )
    assert names(root) == {"a", "a/keep"}


def test_whiteout_then_recreate_in_same_layer(tmp_path: Path) -> None:
    root = unpack(tmp_path, layer(file("f", b"old")), layer(file(".wh.f"), file("f", b"new")))
    assert (root / "f").read_bytes() == b"new"


@pytest.mark.parametrize("marker_first", [True, False])
def test_opaque_directory_keeps_only_this_layers_entries(
    tmp_path: Path, marker_first: bool
) -> None:
    marker = file("d/.wh..wh..opq")
    new = [directory("d"), file("d/new"), file("d/sub/deep")]
    root = unpack(
        tmp_path,
        layer(file("d/old"), file("d/sub/old"), file("other/kept")),
        layer(*([marker, *new] if marker_first else [*new, marker])),
    )
    assert names(root) == {"d", "d/new", "d/sub", "d/sub/deep", "other", "other/kept"}


def test_entries_replace_other_types(tmp_path: Path) -> None:
    root = unpack(
        tmp_path,
        layer(
            file("was-file"),
            file("was-dir/inner"),
            directory("target"),
            symlink("was-link", "target"),
        ),
        layer(
            directory("was-file"),
            file("was-file/now-inside"),
            file("was-dir", b"file now"),
            directory("was-link"),
        ),
    )
    assert (root / "was-file").is_dir()
    assert (root / "was-file/now-inside").is_file()
    assert (root / "was-dir").read_bytes() == b"file now"
    assert (root / "was-link").is_dir()
    assert not (root / "was-link").is_symlink()


def test_directory_entry_keeps_existing_contents(tmp_path: Path) -> None:
    root = unpack(
        tmp_path, layer(file("d/a"), directory("d", mode=0o755)), layer(directory("d", mode=0o700))
    )
    assert names(root) == {"d", "d/a"}
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o700


def test_hardlinks(tmp_path: Path) -> None:
    root = unpack(
        tmp_path,
        layer(file("bin/lower", b"L"), symlink("bin/link", "/etc/passwd")),
        layer(
            file("bin/upper", b"U"),
            hardlink("bin/upper2", "bin/upper"),
            hardlink("./bin/lower2", "./bin/lower"),
            hardlink("bin/link2", "bin/link"),
        ),
    )
    assert os.path.samefile(root / "bin/upper", root / "bin/upper2")
    assert os.path.samefile(root / "bin/lower", root / "bin/lower2")
    # a hardlink to a symlink is the symlink, not the host file it names
    assert os.readlink(root / "bin/link2") == "/etc/passwd"
    assert tree_size(root) == 2


def test_absolute_member_names_stay_inside(tmp_path: Path) -> None:
    root = unpack(tmp_path, layer(file("/etc/motd", b"hi")))
    assert (root / "etc/motd").read_bytes() == b"hi"


TRAVERSALS: dict[str, Callable[[str], list[bytes]]] = {
    "dotdot": lambda out: [layer(file("../escape"))],
    "dotdot-inside": lambda out: [layer(file("a/../../escape"))],
    "hardlink-dotdot": lambda out: [layer(hardlink("stolen", "../../outside/secret"))],
    "through-relative-symlink": lambda out: [
        layer(symlink("link", "../../outside")),
        layer(file("link/escape")),
    ],
    "through-absolute-symlink": lambda out: [
        layer(symlink("link", out)),
        layer(file("link/escape")),
    ],
    "through-symlink-same-layer": lambda out: [layer(symlink("link", out), file("link/escape"))],
    "dir-through-symlink": lambda out: [layer(symlink("link", out), directory("link/escape"))],
    "hardlink-through-symlink": lambda out: [
        layer(symlink("link", out)),
        layer(hardlink("stolen", "link/secret")),
    ],
    "whiteout-through-symlink": lambda out: [
        layer(symlink("link", out)),
        layer(file("link/.wh.secret")),
    ],
    "opaque-through-symlink": lambda out: [
        layer(symlink("link", out)),
        layer(file("link/.wh..wh..opq")),
    ],
}


@pytest.mark.parametrize("make_layers", TRAVERSALS.values(), ids=TRAVERSALS.keys())
def test_rejects_path_traversal(tmp_path: Path, make_layers: Callable[[str], list[bytes]]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    paths = write_layers(tmp_path, *make_layers(str(outside)))
    images = tmp_path / "images"
    with pytest.raises(PullError, match="unsafe"):
        unpack_layers(paths, images / "rootfs")
    assert [p.name for p in outside.iterdir()] == ["secret"]
    assert (outside / "secret").read_text() == "s"
    assert not (tmp_path / "escape").exists()
    assert list(images.iterdir()) == []  # no rootfs, no temp dir, nothing escaped into it


def test_rejects_zstd(tmp_path: Path) -> None:
    (path,) = write_layers(tmp_path, b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    with pytest.raises(PullError, match="unsupported layer compression: zstd"):
        apply_layer(path, tmp_path)


@pytest.mark.parametrize(
    "data",
    [layer(file("a", b"x" * 5000))[:-40], b"\x1f\x8bnot gzip at all", b"garbage" * 100],
    ids=["truncated-gzip", "bad-gzip", "not-a-tar"],
)
def test_rejects_corrupt_layers(tmp_path: Path, data: bytes) -> None:
    (path,) = write_layers(tmp_path, data)
    with pytest.raises(PullError, match="corrupt layer"):
        unpack_layers([path], tmp_path / "images" / "rootfs")
    assert list((tmp_path / "images").iterdir()) == []


def test_entry_below_a_file_fails_cleanly(tmp_path: Path) -> None:
    paths = write_layers(tmp_path, layer(file("f")), layer(file("f/inside")))
    with pytest.raises(PullError, match="cannot apply layer layer1"):
        unpack_layers(paths, tmp_path / "images" / "rootfs")
    assert list((tmp_path / "images").iterdir()) == []


def test_later_entry_of_the_same_layer_wins_over_a_directory(tmp_path: Path) -> None:
    root = unpack(tmp_path, layer(directory("d", mode=0o700), file("d", b"f", mode=0o640)))
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o640
    assert (root / "d").read_bytes() == b"f"
