"""Image types shared by the image store, the agent and the API.

An image is pulled from an OCI registry once, its blobs kept in a content-addressed
cache, its layers unpacked once into a read-only rootfs directory keyed by manifest
digest. Each machine start lays a fresh writable layer over that directory (runtime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ImageError(Exception):
    """Base of image failures; messages are fit to show users in a machine event."""


class InvalidReference(ImageError):
    """The string is not a valid image reference."""


class PullError(ImageError):
    """The image could not be fetched (unknown, unauthorized, registry unreachable, bad data)."""


class ImageNotFound(PullError):
    """The registry has no such repository, tag or digest."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """``registry/repository:tag@digest``; ``tag`` or ``digest`` may be empty, not both."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, self.tag, digest)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of the OCI image config a machine's process is built from."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    """``KEY=VALUE`` strings, as in the OCI config."""
    working_dir: str = ""
    user: str = ""
    exposed_ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Image:
    ref: ImageRef
    """As requested, with ``digest`` set to the resolved manifest digest."""
    rootfs: Path
    config: ImageConfig
    size: int = 0
    """Bytes of the unpacked rootfs."""
