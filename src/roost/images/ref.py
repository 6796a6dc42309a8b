"""Image reference parsing, following the Docker reference grammar.

``[registry[:port]/]path[:tag][@sha256:<hex>]``. Docker Hub names are normalized the
way ``docker pull`` does it: ``alpine`` is ``docker.io/library/alpine:latest``.
"""

from __future__ import annotations

import re

from roost.images.base import ImageRef, InvalidReference

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_HUB = "index.docker.io"
_MAX_NAME = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?",
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")


def _looks_like_registry(component: str) -> bool:
    # Docker's rule: the first path component is a registry when it cannot be a
    # repository name (has a dot, a port, uppercase) or is literally "localhost".
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.lower() != component
    )


def parse_reference(s: str) -> ImageRef:
    """Parse ``s`` into a normalized :class:`ImageRef` or raise :class:`InvalidReference`."""

    def bad(why: str) -> InvalidReference:
        return InvalidReference(f"invalid image reference {s!r}: {why}")

    if not s or not s.strip():
        raise bad("empty reference")
    if s != s.strip():
        raise bad("leading or trailing whitespace")

    rest, at, digest = s.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        if _ANY_DIGEST.fullmatch(digest) and not digest.startswith("sha256:"):
            raise bad(f"unsupported digest algorithm in {digest!r} (only sha256)")
        raise bad(f"invalid digest {digest!r} (want sha256:<64 hex digits>)")

    tag = ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not tag:
            raise bad("empty tag")
        if not _TAG.fullmatch(tag):
            raise bad(f"invalid tag {tag!r}")

    if not rest:
        raise bad("missing repository name")
    first, slash, remainder = rest.partition("/")
    if slash and _looks_like_registry(first):
        registry, repository = first, remainder
        if not _HOST.fullmatch(registry):
            raise bad(f"invalid registry host {registry!r}")
    else:
        registry, repository = DEFAULT_REGISTRY, rest
    if registry == _LEGACY_HUB:
        registry = DEFAULT_REGISTRY

    if not repository:
        raise bad("missing repository name")
    if repository.lower() != repository:
        raise bad("repository name must be lowercase")
    for component in repository.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise bad(f"invalid repository name component {component!r}")
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        if _IMAGE_ID.fullmatch(repository):
            raise bad("a 64-character hexadecimal string is an image id, not a name")
        repository = f"library/{repository}"
    if len(registry) + 1 + len(repository) > _MAX_NAME:
        raise bad(f"name longer than {_MAX_NAME} characters")

    if not tag and not digest:
        tag = DEFAULT_TAG
    return ImageRef(registry=registry, repository=repository, tag=tag, digest=digest)
