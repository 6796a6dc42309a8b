"""Synthetic layers and an in-memory registry behind ``httpx.MockTransport``."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from roost.images.registry import MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""


def file(name: str, data: bytes = b"", mode: int = 0o644) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, mode)


def directory(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def layer(*entries: Entry, compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.linkname = e.linkname
            info.size = len(e.data) if e.type == tarfile.REGTYPE else 0
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(e.data) if e.type == tarfile.REGTYPE else None)
    return gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()


def image_config(**config: Any) -> bytes:
    return json.dumps(
        {"architecture": "amd64", "os": "linux", "config": config, "rootfs": {"type": "layers"}}
    ).encode()


@dataclass
class FakeRegistry:
    """A single-repository registry; optionally demands a Bearer token."""

    repository: str = "test/app"
    token: str | None = None
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers on manifest responses."""

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add_blob(self, data: bytes) -> dict[str, Any]:
        digest = digest_of(data)
        self.blobs[digest] = data
        return {"mediaType": "application/octet-stream", "digest": digest, "size": len(data)}

    def add_image(self, tag: str, layers: list[bytes], config: bytes | None = None) -> str:
        doc = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {
                **self.add_blob(config or image_config()),
                "mediaType": "application/vnd.oci.image.config.v1+json",
            },
            "layers": [
                {**self.add_blob(data), "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
                for data in layers
            ],
        }
        return self.add_manifest(tag, MEDIA_OCI_MANIFEST, doc)

    def add_index(self, tag: str, platforms: dict[str, str]) -> str:
        """``platforms``: ``os/arch[/variant]`` → manifest digest."""
        entries = []
        for plat, digest in platforms.items():
            os_, arch, *variant = plat.split("/")
            media_type, raw = self.manifests[digest]
            platform = {"os": os_, "architecture": arch}
            if variant:
                platform["variant"] = variant[0]
            entries.append(
                {"mediaType": media_type, "digest": digest, "size": len(raw), "platform": platform}
            )
        doc = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": entries}
        return self.add_manifest(tag, MEDIA_OCI_INDEX, doc)

    def add_manifest(self, tag: str, media_type: str, doc: dict[str, Any]) -> str:
        raw = json.dumps(doc).encode()
        digest = digest_of(raw)
        self.manifests[digest] = (media_type, raw)
        if tag:
            self.manifests[tag] = (media_type, raw)
        return digest

    def count(self, path_part: str) -> int:
        return sum(path_part in r.url.path for r in self.requests)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": self.token})
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            challenge = (
                'Bearer realm="https://auth.example/token",service="reg.example",'
                f'scope="repository:{self.repository}:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        prefix = f"/v2/{self.repository}/"
        path = request.url.path
        if not path.startswith(prefix):
            return _error(404, "NAME_UNKNOWN", "repository name not known to registry")
        kind, _, reference = path[len(prefix) :].partition("/")
        if kind == "manifests" and reference in self.manifests:
            media_type, raw = self.manifests[reference]
            return httpx.Response(
                200,
                content=raw,
                headers={
                    "Content-Type": media_type,
                    "Docker-Content-Digest": digest_of(raw),
                    **self.headers,
                },
            )
        if kind == "blobs" and reference in self.blobs:
            return httpx.Response(200, content=self.blobs[reference])
        code = "MANIFEST_UNKNOWN" if kind == "manifests" else "BLOB_UNKNOWN"
        return _error(404, code, f"{kind[:-1]} unknown")


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": message}]})


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def refusing_transport() -> httpx.MockTransport:
    """A transport for code that must not touch the network."""

    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("network access in a test that must not use it", request=request)

    return httpx.MockTransport(handle)
