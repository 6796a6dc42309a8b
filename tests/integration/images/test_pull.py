"""Pulls from a real docker-registry on loopback, checked against umoci's unpack."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from roost.images.base import ImageNotFound, PullError
from roost.images.build import DEFAULT_PATH, seed_demo_images
from roost.images.local_registry import LocalRegistry, free_port
from roost.images.ref import parse_reference
from roost.images.registry import RegistryClient
from roost.images.store import ImageStore
from roost.images.unpack import unpack_layers

pytestmark = pytest.mark.root

HELLO_ENTRYPOINT = ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]


class CountingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ImageStore]:
    image_store = ImageStore(tmp_path / "store")
    yield image_store
    await image_store.aclose()


async def run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Path → (type, mode, uid, gid, link target, size) for every entry under root."""
    tree: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in [".", *dirs, *files] if dirpath == str(root) else [*dirs, *files]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            tree[os.path.relpath(path, root)] = (
                stat.S_IFMT(st.st_mode),
                oct(stat.S_IMODE(st.st_mode)),
                st.st_uid,
                st.st_gid,
                os.readlink(path) if stat.S_ISLNK(st.st_mode) else None,
                st.st_size if stat.S_ISREG(st.st_mode) else None,
            )
    return tree


def read(path: Path) -> bytes:
    return path.read_bytes()


async def test_pulls_the_demo_image(demo_images: dict[str, str], store: ImageStore) -> None:
    image = await store.pull(demo_images["roost/hello"])
    assert image.ref.digest.startswith("sha256:")
    assert image.ref.tag == "latest"
    assert await asyncio.to_thread(read, image.rootfs / "www/index.html") == b"Hello from roost\n"
    busybox = await asyncio.to_thread(os.lstat, image.rootfs / "bin/busybox")
    assert stat.S_ISREG(busybox.st_mode) and busybox.st_mode & 0o111
    assert await asyncio.to_thread(os.readlink, image.rootfs / "bin/httpd") == "/bin/busybox"
    tmp = await asyncio.to_thread(os.lstat, image.rootfs / "tmp")
    assert stat.S_IMODE(tmp.st_mode) == 0o1777
    assert image.config.entrypoint == HELLO_ENTRYPOINT
    assert image.config.exposed_ports == ["8080/tcp"]
    assert f"PATH={DEFAULT_PATH}" in image.config.env
    assert image.config.working_dir == "/"
    assert image.size > busybox.st_size
    assert store.cached(image.ref) == image

    shell = await store.pull(demo_images["roost/busybox"])
    assert shell.config.cmd == ["sh"]
    assert shell.config.entrypoint == []


async def test_seeding_again_keeps_the_images(
    demo_images: dict[str, str], local_registry: LocalRegistry, tmp_path: Path
) -> None:
    async with RegistryClient() as client:
        before = {
            n: (await client.resolve(parse_reference(r))).digest for n, r in demo_images.items()
        }
        assert await seed_demo_images(local_registry.addr, tmp_path) == demo_images
        after = {
            n: (await client.resolve(parse_reference(r))).digest for n, r in demo_images.items()
        }
    assert after == before
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # nothing was built


async def test_digest_pinned_pull_needs_no_registry(
    demo_images: dict[str, str], tmp_path: Path, store: ImageStore
) -> None:
    async with LocalRegistry(tmp_path / "registry", f"127.0.0.1:{free_port()}") as own:
        ref = f"{own.addr}/roost/busybox:latest"
        await run(
            "skopeo",
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{demo_images['roost/busybox']}",
            f"docker://{ref}",
        )
        image = await store.pull(ref)
        await own.stop()
        assert not own.running

        again = await store.pull(str(image.ref))
        assert again == image
        with pytest.raises(PullError, match="unreachable"):
            await store.pull(ref)  # a tag must be resolved, and the registry is gone


async def test_concurrent_pulls_do_the_work_once(
    demo_images: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unpacks: list[Path] = []
    real_unpack = unpack_layers

    def counting_unpack(layers: list[Path], dest: Path) -> int:
        unpacks.append(dest)
        return real_unpack(layers, dest)

    monkeypatch.setattr("roost.images.store.unpack_layers", counting_unpack)
    transport = CountingTransport()
    store = ImageStore(tmp_path / "store", client=RegistryClient(transport=transport))
    try:
        images = await asyncio.gather(*(store.pull(demo_images["roost/hello"]) for _ in range(8)))
    finally:
        await store.aclose()
    assert len({image.ref for image in images}) == 1
    assert len(unpacks) == 1
    blobs = [path for path in transport.paths if "/blobs/" in path]
    assert len(blobs) == 2  # config and the one layer
    assert all(count == 1 for count in transport.paths.values()), transport.paths


async def test_unknown_tag(demo_images: dict[str, str], store: ImageStore) -> None:
    ref = demo_images["roost/hello"].replace(":latest", ":no-such-tag")
    with pytest.raises(ImageNotFound, match=r"not found: manifest unknown"):
        await store.pull(ref)
    with pytest.raises(ImageNotFound):
        await store.pull(ref.replace("roost/hello", "roost/no-such-image"))


async def test_unreachable_registry(store: ImageStore) -> None:
    ref = f"127.0.0.1:{free_port()}/roost/hello:latest"
    with pytest.raises(
        PullError, match=r"registry 127\.0\.0\.1:\d+ is unreachable: Connection refused"
    ):
        await store.pull(ref)


@pytest.mark.parametrize("name", ["roost/hello", "roost/busybox"])
async def test_unpacked_tree_equals_umoci_unpack(
    name: str, demo_images: dict[str, str], store: ImageStore, tmp_path: Path
) -> None:
    image = await store.pull(demo_images[name])
    layout = tmp_path / "layout"
    await run(
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        f"docker://{demo_images[name]}",
        f"oci:{layout}:latest",
    )
    await run("umoci", "unpack", "--image", f"{layout}:latest", str(tmp_path / "bundle"))
    ours, theirs = await asyncio.gather(
        asyncio.to_thread(snapshot, image.rootfs),
        asyncio.to_thread(snapshot, tmp_path / "bundle" / "rootfs"),
    )
    assert len(ours) > 100
    assert ours == theirs
