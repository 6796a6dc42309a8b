"""The launch spec: which command, environment and user a machine's config makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.agent.launch import LaunchError, command, launch_spec
from roost.images.base import Image, ImageConfig, ImageRef
from roost.spec.config import MachineConfig
from roost.store.records import MachineRecord


def image(tmp_path: Path, **config: object) -> Image:
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    ref = ImageRef("registry.test", "demo/app", "v1", "sha256:" + "a" * 64)
    return Image(ref, tmp_path, ImageConfig(**config))  # type: ignore[arg-type]


def record(config: MachineConfig) -> MachineRecord:
    return MachineRecord(
        id="0123456789abcd",
        app="web",
        name="m",
        region="test",
        host_id="h1",
        config=config.wire(),
        desired="started",
        version="01JABCDEFGHJKMNPQRSTVWXYZ0",
        private_ip="fdaa::2",
        ipv4="172.30.0.2",
    )


def test_init_overrides_the_image(tmp_path: Path) -> None:
    img = image(tmp_path, entrypoint=["/entry"], cmd=["serve"])
    assert command(MachineConfig(image="x"), img) == ["/entry", "serve"]
    assert command(MachineConfig(image="x", init={"cmd": ["other"]}), img) == ["/entry", "other"]
    assert command(MachineConfig(image="x", init={"entrypoint": ["/e2"]}), img) == ["/e2"]
    assert command(MachineConfig(image="x", init={"exec": ["/bin/true"]}), img) == ["/bin/true"]


def test_a_process_replaces_init(tmp_path: Path) -> None:
    img = image(tmp_path, entrypoint=["/entry"], cmd=["serve"])
    config = MachineConfig(
        image="x",
        init={"cmd": ["from-init"]},
        processes=[
            {
                "cmd": ["sleep", "3600"],
                "user": "app",
                "env": {"ROLE": "worker"},
                "env_from": [{"env_var": "WHO", "field_ref": "id"}],
            }
        ],
    )
    spec = launch_spec(record(config), config, img, netns=None)
    assert spec.process.argv == ["/entry", "sleep", "3600"]
    assert (spec.process.uid, spec.process.gid) == (1000, 1000)
    assert spec.process.env["ROLE"] == "worker"
    assert spec.process.env["WHO"] == "0123456789abcd"


def test_one_process_per_machine(tmp_path: Path) -> None:
    config = MachineConfig(image="x", processes=[{"cmd": ["a"]}, {"cmd": ["b"]}])
    with pytest.raises(LaunchError, match="lists 2 processes"):
        command(config, image(tmp_path, cmd=["serve"]))
