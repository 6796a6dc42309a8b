"""The local image cache: content-addressed blobs plus one unpacked rootfs per image.

Layout under ``root``::

    blobs/sha256/<hex>          config and layer blobs, shared by every image
    rootfs/<hex>/               the flattened, read-only rootfs of image <hex>
    rootfs/<hex>.json           its metadata; written last, so its presence means complete

``<hex>`` is the digest the reference resolved to (the index digest for multi-platform
images), so a digest-pinned reference finds its rootfs without asking the registry.
Tags are not indexed: pulling ``name:tag`` always asks the registry what the tag means
now, and ``cached`` only answers for references with a digest. One process owns a root.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from roost.images.base import Image, ImageConfig, ImageRef, InvalidReference, PullError
from roost.images.ref import parse_reference
from roost.images.registry import Descriptor, Manifest, RegistryClient
from roost.images.unpack import unpack_layers

T = TypeVar("T")

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_PARALLEL_BLOBS = 4


class _SingleFlight(Generic[T]):
    """Runs one task per key; later callers await the same task.

    The task is shielded: a caller that gives up does not abort work others wait for,
    and the finished result lands in the cache either way.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[T]] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        task = self.tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self.tasks[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]
        if not task.cancelled():
            task.exception()  # else asyncio logs "never retrieved" if all waiters left


def _hex(digest: str) -> str:
    m = _DIGEST.fullmatch(digest)
    if m is None:
        raise InvalidReference(f"invalid digest {digest!r} (want sha256:<64 hex digits>)")
    return m.group(1)


def image_config(doc: dict[str, Any]) -> ImageConfig:
    """The runnable parts of an OCI/Docker image config JSON document."""
    c = doc.get("config")
    c = c if isinstance(c, dict) else {}

    def strings(key: str) -> list[str]:
        value = c.get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    ports = c.get("ExposedPorts")
    labels = c.get("Labels")
    return ImageConfig(
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        env=strings("Env"),
        working_dir=str(c.get("WorkingDir") or ""),
        user=str(c.get("User") or ""),
        exposed_ports=sorted(ports) if isinstance(ports, dict) else [],
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
    )


class ImageStore:
    def __init__(self, root: Path, *, client: RegistryClient | None = None) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.rootfs = root / "rootfs"
        self._client = client
        self._own_client = client is None
        self._pulls: _SingleFlight[Image] = _SingleFlight()
        self._unpacks: _SingleFlight[Image] = _SingleFlight()
        self._fetches: _SingleFlight[None] = _SingleFlight()
        self._fetch_slots = asyncio.Semaphore(_PARALLEL_BLOBS)
        self._in_use: Counter[str] = Counter()
        """Blob digests that pulls in progress need: ``remove`` must leave them alone."""

    async def aclose(self) -> None:
        """Cancel pulls in progress and close the registry client if the store made it."""
        tasks = [t for f in (self._pulls, self._unpacks, self._fetches) for t in f.tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def pull(self, ref: str | ImageRef) -> Image:
        """The image ``ref`` names, fetched and unpacked unless already here.

        A digest-pinned reference that is already unpacked is answered from disk alone.
        """
        if isinstance(ref, str):
            ref = parse_reference(ref)
        if ref.digest and (image := self.cached(ref)) is not None:
            return image
        return await self._pulls.run(str(ref), lambda: self._pull(ref))

    def cached(self, ref: ImageRef) -> Image | None:
        """The unpacked image for a digest-pinned ``ref``; never touches the network."""
        if not ref.digest:
            return None
        meta = self._read_meta(ref.digest)
        if meta is None:
            return None
        return Image(
            ref=ref,
            rootfs=self.rootfs / _hex(ref.digest),
            config=ImageConfig(**meta["config"]),
            size=meta["size"],
        )

    def list(self) -> builtins.list[Image]:
        """Every unpacked image, with the reference it was first pulled by."""
        images = []
        for path in sorted(self.rootfs.glob("*.json")):
            meta = self._read_meta(f"sha256:{path.stem}")
            if meta is not None:
                ref = parse_reference(meta["ref"])
                images.append(
                    Image(
                        ref=ref,
                        rootfs=self.rootfs / path.stem,
                        config=ImageConfig(**meta["config"]),
                        size=meta["size"],
                    )
                )
        return images

    async def remove(self, digest: str) -> bool:
        """Delete an image's rootfs and the blobs no other image needs; False if absent.

        Machines still using the rootfs are the caller's concern.
        """
        meta_path = self.rootfs / f"{_hex(digest)}.json"
        if not meta_path.exists():
            return False
        # metadata first: from here on cached() no longer hands out the rootfs
        meta_path.unlink()
        await asyncio.to_thread(shutil.rmtree, self.rootfs / _hex(digest), True)
        await asyncio.to_thread(self._collect_blobs)
        return True

    def _collect_blobs(self) -> None:
        keep = set(self._in_use)
        for path in self.rootfs.glob("*.json"):
            meta = self._read_meta(f"sha256:{path.stem}")
            if meta is not None:
                keep.update(meta["blobs"])
        if not self.blobs.is_dir():
            return
        for blob in self.blobs.iterdir():
            if f"sha256:{blob.name}" not in keep and not blob.name.startswith("."):
                blob.unlink(missing_ok=True)

    async def cleanup(self) -> None:
        """Delete what interrupted pulls left (temp trees, partial blobs); call at startup."""
        await asyncio.to_thread(self._cleanup)

    def _cleanup(self) -> None:
        for directory in (self.rootfs, self.blobs):
            if directory.is_dir():
                for leftover in directory.glob(".*"):
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink()

    def _client_for_pull(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient()
        return self._client

    async def _pull(self, ref: ImageRef) -> Image:
        manifest = await self._client_for_pull().resolve(ref)
        pinned = ref.with_digest(manifest.digest)
        if (image := self.cached(pinned)) is not None:
            return image
        image = await self._unpacks.run(
            manifest.digest, lambda: self._materialize(pinned, manifest)
        )
        return dataclasses.replace(image, ref=pinned)

    async def _materialize(self, ref: ImageRef, manifest: Manifest) -> Image:
        for layer in manifest.layers:
            if layer.media_type.endswith("+zstd"):
                raise PullError(f"unsupported layer compression: zstd (layer {layer.digest})")
        blobs = [manifest.config, *manifest.layers]
        self._in_use.update(b.digest for b in blobs)
        try:
            await asyncio.gather(
                *(
                    self._fetches.run(b.digest, functools.partial(self._fetch, ref, b))
                    for b in blobs
                )
            )
            config = image_config(await asyncio.to_thread(_read_json, self._blob(manifest.config)))
            hexdigest = _hex(manifest.digest)
            size = await asyncio.to_thread(
                self._unpack, [self._blob(layer) for layer in manifest.layers], hexdigest
            )
            meta = {
                "ref": str(ref),
                "digest": manifest.digest,
                "manifest_digest": manifest.manifest_digest,
                "config": dataclasses.asdict(config),
                "size": size,
                "blobs": [b.digest for b in blobs],
            }
            await asyncio.to_thread(_write_json, self.rootfs / f"{hexdigest}.json", meta)
        finally:
            self._in_use.subtract(b.digest for b in blobs)
            self._in_use += Counter()  # drops the keys that reached zero
        return Image(ref=ref, rootfs=self.rootfs / hexdigest, config=config, size=size)

    def _blob(self, blob: Descriptor) -> Path:
        return self.blobs / blob.hex

    async def _fetch(self, ref: ImageRef, blob: Descriptor) -> None:
        path = self._blob(blob)
        with contextlib.suppress(FileNotFoundError):
            # blobs are only renamed into place after their digest was verified
            if path.stat().st_size == blob.size:
                return
        await asyncio.to_thread(self.blobs.mkdir, parents=True, exist_ok=True)
        async with self._fetch_slots:
            await self._client_for_pull().fetch_blob(ref, blob, path)

    def _unpack(self, layers: Sequence[Path], hexdigest: str) -> int:
        dest = self.rootfs / hexdigest
        # a rootfs without metadata is what a crash between unpack and metadata leaves
        if dest.exists():
            shutil.rmtree(dest)
        return unpack_layers(layers, dest)

    def _read_meta(self, digest: str) -> dict[str, Any] | None:
        if not _DIGEST.fullmatch(digest):
            return None
        try:
            meta = _read_json(self.rootfs / f"{_hex(digest)}.json")
        except (FileNotFoundError, ValueError):
            return None
        if not (self.rootfs / _hex(digest)).is_dir():
            return None
        return meta


def _read_json(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a JSON object")
    return doc


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)
