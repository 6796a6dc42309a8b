from __future__ import annotations

import pytest

from roost.images.base import ImageRef, InvalidReference
from roost.images.ref import parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", ImageRef("docker.io", "library/alpine", "latest")),
        ("alpine:3.19", ImageRef("docker.io", "library/alpine", "3.19")),
        ("library/alpine", ImageRef("docker.io", "library/alpine", "latest")),
        ("docker.io/alpine", ImageRef("docker.io", "library/alpine", "latest")),
        ("index.docker.io/alpine", ImageRef("docker.io", "library/alpine", "latest")),
        ("flyio/app:v1", ImageRef("docker.io", "flyio/app", "v1")),
        (
            "registry.fly.io/my-app:deployment-01H",
            ImageRef("registry.fly.io", "my-app", "deployment-01H"),
        ),
        ("ghcr.io/a/b/c:1.0", ImageRef("ghcr.io", "a/b/c", "1.0")),
        ("localhost/app", ImageRef("localhost", "app", "latest")),
        ("localhost:5000/roost/hello", ImageRef("localhost:5000", "roost/hello", "latest")),
        ("127.0.0.1:5000/roost/hello:latest", ImageRef("127.0.0.1:5000", "roost/hello", "latest")),
        ("[::1]:5000/app", ImageRef("[::1]:5000", "app", "latest")),
        ("Registry.Example/app", ImageRef("Registry.Example", "app", "latest")),
        (f"alpine@{D}", ImageRef("docker.io", "library/alpine", "", D)),
        (f"alpine:3@{D}", ImageRef("docker.io", "library/alpine", "3", D)),
        (f"host:5000/a/b:t@{D}", ImageRef("host:5000", "a/b", "t", D)),
        ("a_b__c-d--e/x.y", ImageRef("docker.io", "a_b__c-d--e/x.y", "latest")),
        ("foo:5000", ImageRef("docker.io", "library/foo", "5000")),
    ],
)
def test_parses(text: str, expected: ImageRef) -> None:
    assert parse_reference(text) == expected


def test_str_round_trips() -> None:
    for text in ("127.0.0.1:5000/roost/hello:latest", f"ghcr.io/a/b:1@{D}"):
        assert str(parse_reference(text)) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty reference"),
        ("  ", "empty reference"),
        (" alpine", "whitespace"),
        ("Alpine", "must be lowercase"),
        ("docker.io/Library/alpine", "must be lowercase"),
        ("alpine:", "empty tag"),
        ("alpine:-bad", "invalid tag"),
        ("alpine:" + "t" * 129, "invalid tag"),
        ("alpine@sha256:abc", "invalid digest"),
        ("alpine@sha256:" + "AB" * 32, "invalid digest"),
        ("alpine@sha512:" + "ab" * 64, "unsupported digest algorithm"),
        ("alpine@", "invalid digest"),
        ("ghcr.io/", "missing repository"),
        (":tag", "missing repository"),
        ("a//b", "invalid repository name component ''"),
        ("-a/b", "invalid repository name component '-a'"),
        ("a/b_", "invalid repository name component 'b_'"),
        ("bad_host.io:x/app", "invalid registry host"),
        ("-host.io/app", "invalid registry host"),
        ("ab" * 32, "image id"),
        ("x/" + "a" * 260, "longer than 255"),
    ],
)
def test_rejects(text: str, why: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    message = str(info.value)
    assert message.startswith(f"invalid image reference {text!r}: ")
    assert why in message
