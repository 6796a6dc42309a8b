"""Volumes as ext4 image files on this host, loop-mounted while they exist.

Layout, under the host's ``DATA/volumes``::

    {vol_id}.img             the volume's image: a sparse file of its full size
    mnt/{vol_id}/            where it is mounted (``mount -o loop``); machines bind it
    snapshots/{snap_id}.img  snapshots: sparse copies of images
    tmp/                     images being made, renamed into place only when complete,
                             so a crash never leaves a half-made image under a real name

Every operation is idempotent, so the agent may simply do it again after a crash.
A volume stays mounted from when it is made until it is removed, and a snapshot
freezes the filesystem (``fsfreeze``) for the moment of the copy, so it is consistent
even while a machine writes to it. Mounts made with ``-o loop`` release their loop
device when unmounted.

Growing a mounted ext4 filesystem (``resize2fs`` online) needs ``CAP_SYS_RESOURCE``,
which some hosts withhold even from root (containers, some VMs): there the image grows
at once but the filesystem only while no machine uses it — unmounted, checked and
resized offline, then mounted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from roost.spec.ids import is_snapshot_id, is_volume_id
from roost.volumes import sparse

log = logging.getLogger("roost.agent")

GIB = 1 << 30
TOOLS = ("mkfs.ext4", "resize2fs", "e2fsck", "mount", "umount", "losetup", "fsfreeze")
MOUNT_OPTIONS = "loop,nodev,nosuid"
CAP_SYS_RESOURCE = 24


class VolumeError(Exception):
    """A volume operation failed; the message is fit to show the volume's owner."""


@dataclass(frozen=True, slots=True)
class FsUsage:
    block_size: int
    blocks: int
    blocks_free: int
    blocks_avail: int


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    size: int
    """Bytes of data in the snapshot (its file is sparse)."""
    digest: str


def supported() -> bool:
    """Whether this host can keep volumes: root, and the tools to make and mount them."""
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in TOOLS)


def online_resize() -> bool:
    """Whether this process may grow mounted filesystems (it holds CAP_SYS_RESOURCE)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


class LoopVolumes:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("mnt", "snapshots", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # -- paths ------------------------------------------------------------------------------

    def image(self, volume_id: str) -> Path:
        return self.root / f"{_volume(volume_id)}.img"

    def mount_point(self, volume_id: str) -> Path:
        return self.root / "mnt" / _volume(volume_id)

    def snapshot_image(self, snapshot_id: str) -> Path:
        if not is_snapshot_id(snapshot_id):
            raise VolumeError(f"{snapshot_id!r} is not a snapshot id")
        return self.root / "snapshots" / f"{snapshot_id}.img"

    def _tmp(self, name: str) -> Path:
        path = self.root / "tmp" / f"{name}.img"
        path.unlink(missing_ok=True)
        return path

    # -- what is here -------------------------------------------------------------------------

    def exists(self, volume_id: str) -> bool:
        return self.image(volume_id).exists()

    def known(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("vol_*.img") if is_volume_id(p.stem))

    def known_snapshots(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "snapshots").glob("vs_*.img"))

    def capacity_gb(self) -> int:
        """Room for volumes: free space here, plus what volumes already take (a restarted
        agent must not count its own volumes as gone)."""
        stat = os.statvfs(self.root)
        used = sum(p.stat().st_blocks * 512 for p in self.root.glob("vol_*.img"))
        return (stat.f_bavail * stat.f_frsize + used) // GIB

    def mounted(self, volume_id: str) -> bool:
        return os.path.ismount(self.mount_point(volume_id))

    def usage(self, volume_id: str) -> FsUsage | None:
        if not self.mounted(volume_id):
            return None
        stat = os.statvfs(self.mount_point(volume_id))
        return FsUsage(stat.f_frsize, stat.f_blocks, stat.f_bfree, stat.f_bavail)

    # -- making volumes ---------------------------------------------------------------------

    async def create(self, volume_id: str, size_gb: int) -> None:
        """A new, empty ext4 filesystem of ``size_gb``."""
        if self.exists(volume_id):
            return
        tmp = self._tmp(volume_id)
        try:
            os.truncate(_touch(tmp), size_gb * GIB)
            # No blocks reserved for root: all of a volume is the machine's.
            await _run("mkfs.ext4", "-q", "-F", "-m", "0", str(tmp))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.rename(self.image(volume_id))

    async def restore(self, volume_id: str, snapshot_id: str, size_gb: int) -> None:
        """A volume from a snapshot kept on this host, grown to ``size_gb``."""
        if self.exists(volume_id):
            return
        source = self.snapshot_image(snapshot_id)
        if not source.exists():
            raise VolumeError(f"snapshot {snapshot_id} is not on this host")
        tmp = self._tmp(volume_id)
        try:
            await asyncio.to_thread(sparse.copy, source, tmp)
            await _fit(tmp, size_gb)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.rename(self.image(volume_id))

    async def receive(
        self, volume_id: str, stream: AsyncIterator[bytes], digest: str, size_gb: int
    ) -> None:
        """A volume from a snapshot streamed from another host (``sparse`` framing)."""
        if self.exists(volume_id):
            return
        tmp = self._tmp(volume_id)
        receiver = sparse.Receiver(tmp)
        try:
            async for piece in stream:
                await asyncio.to_thread(receiver.feed, piece)
            await asyncio.to_thread(receiver.finish, digest)
            await _fit(tmp, size_gb)
        except sparse.SparseError as exc:
            receiver.abort()
            tmp.unlink(missing_ok=True)
            raise VolumeError(f"the snapshot did not arrive whole: {exc}") from None
        except BaseException:
            receiver.abort()
            tmp.unlink(missing_ok=True)
            raise
        tmp.rename(self.image(volume_id))

    # -- mounted volumes ----------------------------------------------------------------------

    async def mount(self, volume_id: str) -> Path:
        """Mount the volume (once); returns where machines bind it from."""
        target = self.mount_point(volume_id)
        if self.mounted(volume_id):
            # A previous agent may have died in the middle of a snapshot.
            await _run("fsfreeze", "-u", str(target), check=False)
            return target
        if not self.exists(volume_id):
            raise VolumeError(f"volume {volume_id} has no image on this host")
        target.mkdir(parents=True, exist_ok=True)
        await _run(
            "mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(self.image(volume_id)), str(target)
        )
        return target

    async def extend(self, volume_id: str, size_gb: int, *, offline: bool) -> bool:
        """Grow the image, and its filesystem online if this host allows it, else
        (when ``offline``: no machine uses it) unmounted. False: the filesystem could
        not grow yet (call again, with ``offline``, once no machine uses it)."""
        target = await self.mount(volume_id)
        image = self.image(volume_id)
        _grow_file(image, size_gb)
        device = _mounted_device(target)
        # The loop device keeps its old size until told to look again.
        await _run("losetup", "-c", device)
        # Online, or "nothing to do" when the filesystem already fills the image.
        if await _run("resize2fs", device, check=False):
            return True
        if not offline:
            return False
        await _run("umount", str(target))
        try:
            # e2fsck refuses (and so nothing is resized) if the filesystem is still
            # mounted somewhere; mounting it again then reuses its loop device.
            await _run("e2fsck", "-f", "-p", str(image), ok=(0, 1))
            await _run("resize2fs", str(image))
        finally:
            await self.mount(volume_id)
        return True

    async def snapshot(self, volume_id: str, snapshot_id: str) -> SnapshotFile:
        """A sparse copy of the volume's image, taken with its filesystem frozen."""
        final = self.snapshot_image(snapshot_id)
        if final.exists():
            copied = await asyncio.to_thread(sparse.digest_of, final)
            return SnapshotFile(copied.data_bytes, copied.digest)
        target = await self.mount(volume_id)
        tmp = self._tmp(snapshot_id)
        await _run("fsfreeze", "-f", str(target))
        try:
            copied = await asyncio.to_thread(sparse.copy, self.image(volume_id), tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            await _run("fsfreeze", "-u", str(target))
        tmp.rename(final)
        return SnapshotFile(copied.data_bytes, copied.digest)

    def read_snapshot(self, snapshot_id: str) -> Iterator[bytes]:
        """The snapshot as a stream, for another host to restore from."""
        path = self.snapshot_image(snapshot_id)
        if not path.exists():
            raise VolumeError(f"snapshot {snapshot_id} is not on this host")
        return sparse.stream(path)

    # -- removing -------------------------------------------------------------------------------

    async def remove(self, volume_id: str) -> None:
        target = self.mount_point(volume_id)
        if self.mounted(volume_id):
            await _run("fsfreeze", "-u", str(target), check=False)
            if not await _run("umount", str(target), check=False):
                # Something on this host still holds it: detach it from the tree now,
                # the kernel lets go of it (and of its loop device) when that ends.
                await _run("umount", "-l", str(target))
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()
        self.image(volume_id).unlink(missing_ok=True)

    async def remove_snapshot(self, snapshot_id: str) -> None:
        self.snapshot_image(snapshot_id).unlink(missing_ok=True)


async def _fit(image: Path, size_gb: int) -> None:
    """Make a restored image ``size_gb`` long and its filesystem fill it (the snapshot
    may be of a volume whose filesystem had not grown with its image yet)."""
    _grow_file(image, size_gb)
    # resize2fs wants a freshly checked filesystem when it is not mounted.
    await _run("e2fsck", "-f", "-p", str(image), ok=(0, 1))
    await _run("resize2fs", str(image))


def _grow_file(image: Path, size_gb: int) -> None:
    """Make the image ``size_gb`` long if it is shorter (images never shrink)."""
    if image.stat().st_size < size_gb * GIB:
        os.truncate(image, size_gb * GIB)


def _mounted_device(target: Path) -> str:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[1] == str(target):
            return parts[0]
    raise VolumeError(f"{target} is not mounted")


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _volume(volume_id: str) -> str:
    if not is_volume_id(volume_id):
        raise VolumeError(f"{volume_id!r} is not a volume id")
    return volume_id


async def _run(*argv: str, check: bool = True, ok: tuple[int, ...] = (0,)) -> bool:
    """Run a tool; False (or VolumeError when ``check``) if it fails."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode in ok:
        return True
    if check:
        text = output.decode(errors="replace").strip()
        raise VolumeError(f"{argv[0]} failed (exit {process.returncode}): {text[-300:]}")
    log.debug("%s exited %s", " ".join(argv), process.returncode)
    return False
