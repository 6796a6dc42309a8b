from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from roost.images.base import ImageConfig, ImageNotFound, ImageRef, PullError
from roost.images.registry import RegistryClient
from roost.images.store import ImageStore
from roost.images.unpack import unpack_layers
from tests.unit.images.fakes import (
    FakeRegistry,
    digest_of,
    directory,
    file,
    image_config,
    layer,
    listing,
    refusing_transport,
)

TAG = "reg.example/test/app:v1"


def fake_with_image() -> tuple[FakeRegistry, str]:
    fake = FakeRegistry(token="tok")
    digest = fake.add_image(
        "v1",
        [
            layer(file("etc/a", b"A"), file("etc/b", b"BB")),
            layer(file("etc/.wh.a"), directory("www")),
        ],
        image_config(
            Entrypoint=["/bin/app"], Cmd=["serve"], Env=["PATH=/bin"], ExposedPorts={"8080/tcp": {}}
        ),
    )
    return fake, digest


async def test_pull_unpacks_and_caches(tmp_path: Path) -> None:
    fake, digest = fake_with_image()
    store = ImageStore(tmp_path, client=RegistryClient(transport=fake.transport()))
    image = await store.pull(TAG)
    assert image.ref == ImageRef("reg.example", "test/app", "v1", digest)
    assert image.rootfs == tmp_path / "rootfs" / digest.removeprefix("sha256:")
    assert listing(image.rootfs) == ["etc", "www"]
    assert listing(image.rootfs / "etc") == ["b"]
    assert image.size == 2
    assert image.config == ImageConfig(
        entrypoint=["/bin/app"], cmd=["serve"], env=["PATH=/bin"], exposed_ports=["8080/tcp"]
    )
    assert len(listing(tmp_path / "blobs" / "sha256")) == 3  # config + 2 layers

    offline = ImageStore(tmp_path, client=RegistryClient(transport=refusing_transport()))
    assert offline.cached(image.ref) == image
    assert await offline.pull(f"reg.example/test/app@{digest}") == ImageStore(tmp_path).cached(
        ImageRef("reg.example", "test/app", digest=digest)
    )
    assert offline.cached(ImageRef("reg.example", "test/app", "v1")) is None  # tags: no index
    assert offline.list() == [image]


async def test_pull_by_tag_asks_the_registry_but_reuses_the_rootfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = fake_with_image()
    store = ImageStore(tmp_path, client=RegistryClient(transport=fake.transport()))
    first = await store.pull(TAG)
    blob_requests = fake.count("/blobs/")
    monkeypatch.setattr("roost.images.store.unpack_layers", pytest.fail)
    again = await store.pull(TAG)
    assert again == first
    assert fake.count("/blobs/") == blob_requests


async def test_concurrent_pulls_do_the_work_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, digest = fake_with_image()
    unpacks: list[Path] = []
    real_unpack = unpack_layers

    def counting_unpack(layers: list[Path], dest: Path) -> int:
        unpacks.append(dest)
        return real_unpack(layers, dest)

    monkeypatch.setattr("roost.images.store.unpack_layers", counting_unpack)
    store = ImageStore(tmp_path, client=RegistryClient(transport=fake.transport()))
    other_tag = "reg.example/test/app:v1-alias"
    fake.manifests["v1-alias"] = fake.manifests["v1"]
    images = await asyncio.gather(*[store.pull(TAG) for _ in range(5)], store.pull(other_tag))
    assert {image.ref.digest for image in images} == {digest}
    assert images[-1].ref.tag == "v1-alias"
    assert len(unpacks) == 1
    for blob in fake.blobs:
        assert fake.count(f"/blobs/{blob}") == 1
    authorized = [r.url.path for r in fake.requests if "Authorization" in r.headers]
    assert sum(p.endswith("/manifests/v1") for p in authorized) == 1
    assert sum(p.endswith("/manifests/v1-alias") for p in authorized) == 1


async def test_a_cancelled_caller_does_not_abort_the_shared_pull(tmp_path: Path) -> None:
    fake, digest = fake_with_image()
    store = ImageStore(tmp_path, client=RegistryClient(transport=fake.transport()))
    first = asyncio.ensure_future(store.pull(TAG))
    second = asyncio.ensure_future(store.pull(TAG))
    await asyncio.sleep(0)
    first.cancel()
    image = await second
    assert image.ref.digest == digest
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_remove_deletes_rootfs_and_unshared_blobs(tmp_path: Path) -> None:
    fake, digest = fake_with_image()
    shared = layer(file("etc/a", b"A"), file("etc/b", b"BB"))
    other = fake.add_image("v2", [shared, layer(file("only-v2"))])
    store = ImageStore(tmp_path, client=RegistryClient(transport=fake.transport()))
    one = await store.pull(TAG)
    two = await store.pull("reg.example/test/app:v2")
    assert len(listing(tmp_path / "blobs" / "sha256")) == 5  # 2 configs, 3 distinct layers

    assert await store.remove(digest)
    assert not one.rootfs.exists()
    assert store.cached(one.ref) is None
    assert store.list() == [two]
    blobs = listing(tmp_path / "blobs" / "sha256")
    assert digest_of(shared).removeprefix("sha256:") in blobs
    assert len(blobs) == 3
    assert not await store.remove(digest)
    assert await store.remove(other)
    assert listing(tmp_path / "blobs" / "sha256") == []
    assert listing(tmp_path / "rootfs") == []


async def test_failed_pull_leaves_no_image(tmp_path: Path) -> None:
    fake, _ = fake_with_image()
    bad = next(d for d, data in fake.blobs.items() if data.startswith(b"\x1f\x8b"))
    fake.blobs[bad] = b"tampered"
    store = ImageStore(tmp_path, client=RegistryClient(transport=fake.transport()))
    with pytest.raises(PullError, match="mismatch"):
        await store.pull(TAG)
    assert store.list() == []
    assert not (tmp_path / "blobs" / "sha256" / bad.removeprefix("sha256:")).exists()
    with pytest.raises(ImageNotFound):
        await store.pull("reg.example/test/app:nope")


async def test_zstd_layers_are_refused_before_download(tmp_path: Path) -> None:
    fake, _ = fake_with_image()
    media_type, raw = fake.manifests["v1"]
    fake.add_manifest(
        "zstd", media_type, _retype(raw, "application/vnd.oci.image.layer.v1.tar+zstd")
    )
    store = ImageStore(tmp_path, client=RegistryClient(transport=fake.transport()))
    with pytest.raises(PullError, match="unsupported layer compression: zstd"):
        await store.pull("reg.example/test/app:zstd")
    assert fake.count("/blobs/") == 0


def _retype(raw: bytes, media_type: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(raw)
    for entry in doc["layers"]:
        entry["mediaType"] = media_type
    return doc


async def test_cleanup_removes_leftovers_of_interrupted_pulls(tmp_path: Path) -> None:
    fake, _ = fake_with_image()
    store = ImageStore(tmp_path, client=RegistryClient(transport=fake.transport()))
    image = await store.pull(TAG)
    before = (listing(tmp_path / "rootfs"), listing(tmp_path / "blobs" / "sha256"))
    await asyncio.to_thread(_litter, tmp_path)
    await store.cleanup()
    assert (listing(tmp_path / "rootfs"), listing(tmp_path / "blobs" / "sha256")) == before
    assert store.cached(image.ref) == image


def _litter(root: Path) -> None:
    (root / "rootfs" / ".abc.x1.tmp" / "bin").mkdir(parents=True)
    (root / "rootfs" / ".abc.json.tmp").write_text("{")
    (root / "blobs" / "sha256" / ".abc.1234.part").write_bytes(b"partial")
