from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from roost.images.base import ImageNotFound, ImageRef, PullError
from roost.images.registry import (
    MEDIA_OCI_MANIFEST,
    Descriptor,
    RegistryClient,
    host_platform,
)
from tests.unit.images.fakes import (
    FakeRegistry,
    digest_of,
    file,
    image_config,
    layer,
    listing,
    refusing_transport,
)

REF = ImageRef("reg.example", "test/app", "v1")


def client_for(fake: FakeRegistry, **kwargs: object) -> RegistryClient:
    return RegistryClient(transport=fake.transport(), **kwargs)  # type: ignore[arg-type]


async def test_resolves_a_manifest_by_tag() -> None:
    fake = FakeRegistry()
    layers = [layer(file("a")), layer(file("b"))]
    digest = fake.add_image("v1", layers, image_config(Cmd=["sh"]))
    async with client_for(fake) as client:
        manifest = await client.resolve(REF)
    assert manifest.digest == digest == manifest.manifest_digest
    assert manifest.media_type == MEDIA_OCI_MANIFEST
    assert [layer.digest for layer in manifest.layers] == [digest_of(d) for d in layers]
    assert manifest.layers[0].size == len(layers[0])
    assert json.loads(manifest.raw)["config"]["digest"] == manifest.config.digest
    assert str(fake.requests[0].url) == "https://reg.example/v2/test/app/manifests/v1"
    assert "application/vnd.oci.image.index.v1+json" in fake.requests[0].headers["Accept"]


async def test_index_picks_the_host_platform() -> None:
    fake = FakeRegistry()
    amd64 = fake.add_image("", [layer(file("amd64"))])
    arm64 = fake.add_image("", [layer(file("arm64"))])
    arm64_v8 = fake.add_image("", [layer(file("arm64-v8"))])
    index = fake.add_index(
        "v1",
        {
            "unknown/unknown": amd64,
            "linux/arm64": arm64,
            "linux/arm64/v8": arm64_v8,
            "linux/amd64": amd64,
        },
    )
    async with client_for(fake, platform="linux/amd64") as client:
        manifest = await client.resolve(REF)
    assert (manifest.digest, manifest.manifest_digest) == (index, amd64)
    async with client_for(fake, platform="linux/arm64/v8") as client:
        assert (await client.resolve(REF)).manifest_digest == arm64_v8
    async with client_for(fake, platform="linux/arm64") as client:
        assert (await client.resolve(REF)).manifest_digest == arm64
    async with client_for(fake, platform="linux/riscv64") as client:
        with pytest.raises(
            PullError, match=r"no image for linux/riscv64 \(available: .*linux/amd64"
        ):
            await client.resolve(REF)


async def test_resolves_by_digest() -> None:
    fake = FakeRegistry()
    digest = fake.add_image("v1", [layer(file("a"))])
    async with client_for(fake) as client:
        manifest = await client.resolve(ImageRef("reg.example", "test/app", digest=digest))
    assert manifest.digest == digest
    assert fake.requests[0].url.path.endswith(f"/manifests/{digest}")


def test_host_platform() -> None:
    assert host_platform() in {"linux/amd64", "linux/arm64"}


def test_scheme_per_registry() -> None:
    client = RegistryClient(insecure=["reg.internal:5000", "plain.example"])
    assert client.base_url("localhost") == "http://localhost"
    assert client.base_url("localhost:5000") == "http://localhost:5000"
    assert client.base_url("127.0.0.1:41234") == "http://127.0.0.1:41234"
    assert client.base_url("[::1]:5000") == "http://[::1]:5000"
    assert client.base_url("reg.internal:5000") == "http://reg.internal:5000"
    assert client.base_url("reg.internal:6000") == "https://reg.internal:6000"
    assert client.base_url("plain.example:8080") == "http://plain.example:8080"
    assert client.base_url("ghcr.io") == "https://ghcr.io"
    assert client.base_url("docker.io") == "https://registry-1.docker.io"


async def test_anonymous_token_flow() -> None:
    fake = FakeRegistry(token="t0k3n")
    fake.add_image("v1", [layer(file("a"))])
    async with client_for(fake) as client:
        await client.resolve(REF)
        await client.resolve(REF)
    token_requests = [r for r in fake.requests if r.url.host == "auth.example"]
    assert len(token_requests) == 1  # the token is reused
    params = token_requests[0].url.params
    assert params["scope"] == "repository:test/app:pull"
    assert params["service"] == "reg.example"
    assert "Authorization" not in token_requests[0].headers
    assert fake.requests[-1].headers["Authorization"] == "Bearer t0k3n"


async def test_token_flow_sends_basic_credentials_to_the_token_server() -> None:
    fake = FakeRegistry(token="t0k3n")
    fake.add_image("v1", [layer(file("a"))])
    async with client_for(fake, credentials={"reg.example": ("me", "pw")}) as client:
        await client.resolve(REF)
    (token_request,) = [r for r in fake.requests if r.url.host == "auth.example"]
    assert token_request.headers["Authorization"] == httpx.BasicAuth("me", "pw")._auth_header


async def test_basic_auth_challenge() -> None:
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != httpx.BasicAuth("me", "pw")._auth_header:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    lookup = {"reg.example": ("me", "pw")}.get
    async with RegistryClient(transport=httpx.MockTransport(handle), credentials=lookup) as c:
        with pytest.raises(ImageNotFound):
            await c.resolve(REF)
    assert seen[0] is None and seen[1] is not None
    async with RegistryClient(transport=httpx.MockTransport(handle)) as c:
        with pytest.raises(PullError, match="requires credentials"):
            await c.resolve(REF)


async def test_denied_token_is_unauthorized() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"access_token": "weak"})
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'}
        )

    async with RegistryClient(transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(PullError, match=r"pull access denied for reg.example/test/app"):
            await client.resolve(REF)


async def test_unknown_tag_and_repository() -> None:
    fake = FakeRegistry()
    fake.add_image("v1", [layer(file("a"))])
    async with client_for(fake) as client:
        with pytest.raises(ImageNotFound, match=r"image reg.example/test/app:v2 not found"):
            await client.resolve(ImageRef("reg.example", "test/app", "v2"))
        with pytest.raises(ImageNotFound, match=r"repository reg.example/other/app not found"):
            await client.resolve(ImageRef("reg.example", "other/app", "v1"))


async def test_server_error_is_a_pull_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503, text="overloaded"))
    async with RegistryClient(transport=transport) as client:
        with pytest.raises(PullError, match="answered HTTP 503"):
            await client.resolve(REF)


async def test_unreachable_registry() -> None:
    async with RegistryClient(transport=refusing_transport()) as client:
        with pytest.raises(PullError, match=r"registry reg\.example is unreachable"):
            await client.resolve(REF)


async def test_manifest_digest_mismatch() -> None:
    fake = FakeRegistry()
    fake.add_image("v1", [layer(file("a"))])
    wrong = "sha256:" + "0" * 64
    fake.manifests[wrong] = fake.manifests["v1"]
    async with client_for(fake) as client:
        with pytest.raises(PullError, match="digest mismatch for manifest"):
            await client.resolve(ImageRef("reg.example", "test/app", digest=wrong))
    fake.headers["Docker-Content-Digest"] = wrong
    async with client_for(fake) as client:
        with pytest.raises(PullError, match="registry says sha256:000"):
            await client.resolve(REF)


async def test_rejects_schema1_and_bad_descriptors() -> None:
    fake = FakeRegistry()
    fake.add_manifest(
        "old", "application/vnd.docker.distribution.manifest.v1+prettyjws", {"schemaVersion": 1}
    )
    fake.add_manifest(
        "bad",
        MEDIA_OCI_MANIFEST,
        {"config": {"digest": "sha256:../../etc", "size": 1}, "layers": []},
    )
    async with client_for(fake) as client:
        with pytest.raises(PullError, match="schema 1"):
            await client.resolve(ImageRef("reg.example", "test/app", "old"))
        with pytest.raises(PullError, match="malformed digest"):
            await client.resolve(ImageRef("reg.example", "test/app", "bad"))


async def test_fetch_blob(tmp_path: Path) -> None:
    fake = FakeRegistry()
    data = layer(file("big", bytes(range(256)) * 20_000), compress=False)
    blob = Descriptor("x", **{k: v for k, v in fake.add_blob(data).items() if k != "mediaType"})
    async with client_for(fake) as client:
        await client.fetch_blob(REF, blob, tmp_path / "blob")
    assert digest_of(await asyncio.to_thread((tmp_path / "blob").read_bytes)) == digest_of(data)
    assert listing(tmp_path) == ["blob"]


@pytest.mark.parametrize(
    ("served", "size", "error"),
    [
        (b"evil bytes", None, "digest mismatch for blob"),
        (b"short", 10, "size mismatch"),
        (b"much too long", 5, "size mismatch"),
    ],
)
async def test_fetch_blob_verifies(
    tmp_path: Path, served: bytes, size: int | None, error: str
) -> None:
    fake = FakeRegistry()
    good = b"good bytes"
    digest = digest_of(good)
    fake.blobs[digest] = served
    blob = Descriptor("x", digest, len(good) if size is None else size)
    async with client_for(fake) as client:
        with pytest.raises(PullError, match=error):
            await client.fetch_blob(REF, blob, tmp_path / "blob")
    assert listing(tmp_path) == []


async def test_fetch_blob_without_content_length_checks_while_streaming(tmp_path: Path) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 100
        yield b"y" * 100

    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=body()))
    blob = Descriptor("x", digest_of(b"x" * 100), 100)
    async with RegistryClient(transport=transport) as client:
        with pytest.raises(PullError, match="more than 100 bytes"):
            await client.fetch_blob(REF, blob, tmp_path / "blob")
    assert listing(tmp_path) == []


async def test_missing_blob(tmp_path: Path) -> None:
    async with client_for(FakeRegistry()) as client:
        with pytest.raises(ImageNotFound, match="blob sha256:"):
            await client.fetch_blob(REF, Descriptor("x", digest_of(b""), 0), tmp_path / "b")
