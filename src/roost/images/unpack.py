"""Flatten OCI layer tarballs into a rootfs directory (blocking; run it in a thread).

Layers apply in order with the OCI whiteout rules: ``.wh.NAME`` deletes NAME from the
layers below, ``.wh..wh..opq`` empties its directory of what the layers below put there,
and an entry replaces whatever of another type sits at its path (file ↔ directory ↔
symlink). Every path is checked to stay inside the root, also through symlinks that
earlier entries created, so a hostile layer cannot write, link or delete outside it.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from roost.images.base import PullError

if not hasattr(tarfile, "tar_filter"):
    raise ImportError("roost.images.unpack needs Python >= 3.11.4 (tarfile extraction filters)")

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

_GZIP = b"\x1f\x8b"
_UNSUPPORTED_MAGIC = {
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\xfd7zXZ": "xz",
}


def unpack_layers(layers: Sequence[Path], dest: Path) -> int:
    """Build ``dest`` from ``layers`` (bottom first); return the bytes of its files.

    The tree is assembled in a temp directory beside ``dest`` and renamed into place,
    so ``dest`` either does not exist or is complete. ``dest`` must not exist yet.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        # mkdtemp makes it 0700; an image root is 0755 unless a layer says otherwise
        tmp.chmod(0o755)
        for layer in layers:
            apply_layer(layer, tmp)
        size = tree_size(tmp)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return size


def apply_layer(layer: Path, root: Path) -> None:
    """Apply one layer tarball (plain or gzip) on top of the tree at ``root``."""
    with open(layer, "rb") as f:
        magic = f.read(6)
        f.seek(0)
        for prefix, name in _UNSUPPORTED_MAGIC.items():
            if magic.startswith(prefix):
                raise PullError(f"unsupported layer compression: {name} (layer {layer.name})")
        mode: Literal["r|gz", "r|"] = "r|gz" if magic.startswith(_GZIP) else "r|"
        try:
            with tarfile.open(fileobj=f, mode=mode) as tar:
                _Applier(tar, root).run()
        except tarfile.FilterError as e:
            raise PullError(f"unsafe entry in layer {layer.name}: {e}") from e
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise PullError(f"corrupt layer {layer.name}: {e}") from e
        except OSError as e:
            raise PullError(f"cannot apply layer {layer.name}: {e}") from e


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root``, hardlinked files counted once."""
    total = 0
    inodes: set[int] = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and st.st_ino not in inodes:
                inodes.add(st.st_ino)
                total += st.st_size
    return total


def _keep_mode(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    # The "tar" filter keeps entries inside dest (and allows the absolute symlinks that
    # busybox-style images have), but it also masks modes with 0o755. Images need the
    # bits it drops (sticky /tmp, setuid binaries, group-writable dirs), and umoci keeps
    # them, so put the mode back after the checks.
    return tarfile.tar_filter(member, dest).replace(mode=member.mode & 0o7777, deep=False)


def _normalize(name: str) -> str | None:
    """The entry's path relative to the root ("" for the root), None if it escapes."""
    rel = posixpath.normpath(name.lstrip("/"))
    if rel == ".":
        return ""
    if rel == ".." or rel.startswith("../"):
        return None
    return rel


class _Applier:
    def __init__(self, tar: tarfile.TarFile, root: Path) -> None:
        self.tar = tar
        self.root = os.path.realpath(root)
        self.added: set[str] = set()
        """Paths this layer created (with their parents): an opaque marker spares them."""
        self.dirs: list[tarfile.TarInfo] = []

    def run(self) -> None:
        for member in self.tar:
            self._apply(member)
        # Directory attributes last, deepest first (as extractall does): later entries
        # would bump the mtimes, and a read-only directory must still be filled.
        for member in sorted(self.dirs, key=lambda m: m.name, reverse=True):
            path = self._path(member.name)
            st = _lstat(path)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue  # a later entry of this layer replaced or whited it out
            self.tar.chown(member, path, numeric_owner=True)
            self.tar.utime(member, path)
            self.tar.chmod(member, path)

    def _apply(self, member: tarfile.TarInfo) -> None:
        rel = _normalize(member.name)
        if rel is None:
            raise PullError(f"unsafe layer entry {member.name!r}: path leads outside the image")
        parent, base = posixpath.split(rel)
        if base.startswith(WHITEOUT):
            self._check_parent(rel, member.name)
            if base == OPAQUE:
                self._clear(parent)
            elif not base.startswith(WHITEOUT + WHITEOUT):
                # ".wh..wh.*" other than the opaque marker is aufs bookkeeping, not a path
                _remove(self._path(posixpath.join(parent, base[len(WHITEOUT) :])))
            return
        member = member.replace(name=rel or ".", deep=False)
        if rel == "":
            if member.isdir():
                self.dirs.append(_keep_mode(member, self.root))
            return
        self._check_parent(rel, member.name)
        path = self._path(rel)
        existing = _lstat(path)
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            _remove(path)
        self._mark_added(rel)
        if member.islnk():
            self._hardlink(member, path)
        elif member.isdir():
            filtered = _keep_mode(member, self.root)
            self.tar.extract(filtered, self.root, set_attrs=False, filter="fully_trusted")
            self.dirs.append(filtered)
        elif (member.ischr() or member.isblk()) and os.geteuid() != 0:
            return  # device nodes need root; an unprivileged unpack goes on without them
        else:
            self.tar.extract(member, self.root, numeric_owner=True, filter=_keep_mode)

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _check_parent(self, rel: str, name: str) -> None:
        # Symlinks an earlier entry or layer made could route the parent elsewhere.
        parent = os.path.realpath(self._path(posixpath.dirname(rel)))
        if os.path.commonpath([parent, self.root]) != self.root:
            raise PullError(
                f"unsafe layer entry {name!r}: its directory resolves outside the image"
            )

    def _mark_added(self, rel: str) -> None:
        while rel and rel not in self.added:
            self.added.add(rel)
            rel = posixpath.dirname(rel)

    def _clear(self, rel: str) -> None:
        path = self._path(rel)
        st = _lstat(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return
        with os.scandir(path) as entries:
            for entry in list(entries):
                child = posixpath.join(rel, entry.name)
                if child not in self.added:
                    _remove(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    # kept because this layer wrote inside it; what lower layers left goes
                    self._clear(child)

    def _hardlink(self, member: tarfile.TarInfo, path: str) -> None:
        target_rel = _normalize(member.linkname)
        if not target_rel:
            raise PullError(
                f"unsafe layer entry {member.name!r}: hardlink to {member.linkname!r} "
                "leads outside the image"
            )
        self._check_parent(target_rel, member.name)
        target = self._path(target_rel)
        if _lstat(target) is None:
            raise PullError(
                f"bad layer entry {member.name!r}: hardlink target {member.linkname!r} is missing"
            )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # follow_symlinks=False: a hardlink to a symlink must not become a hardlink to
        # whatever (possibly outside) file the symlink points at
        os.link(target, path, follow_symlinks=False)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _remove(path: str) -> None:
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
