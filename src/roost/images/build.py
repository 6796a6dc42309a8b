"""Build small images from busybox-static with umoci and push them with skopeo.

The layer is made by ``umoci unpack`` + copying files + ``umoci repack``; ``umoci
insert`` (0.4.7) writes truncated tars that Python's tarfile and GNU tar reject.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from roost.images.base import ImageError, ImageNotFound, PullError
from roost.images.ref import parse_reference
from roost.images.registry import RegistryClient

DEFAULT_PATH = "/bin:/usr/bin:/sbin:/usr/sbin"
_BASE_DIRS = ("etc", "root", "proc", "sys", "dev", "usr/bin", "sbin", "usr/sbin", "var")


@dataclass(frozen=True, slots=True)
class DemoImage:
    """A busybox image the server seeds into its registry and tests pull."""

    files: Mapping[str, bytes] = field(default_factory=dict)
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    exposed_ports: tuple[int, ...] = ()


DEMO_IMAGES: Mapping[str, DemoImage] = MappingProxyType(
    {
        "roost/hello": DemoImage(
            files={"/www/index.html": b"Hello from roost\n"},
            entrypoint=("/bin/httpd", "-f", "-p", "8080", "-h", "/www"),
            exposed_ports=(8080,),
        ),
        "roost/busybox": DemoImage(cmd=("sh",)),
    }
)
DEMO_TAG = "latest"


async def build_image(
    workdir: Path,
    *,
    tag: str = "latest",
    files: Mapping[str, bytes | Path] = MappingProxyType({}),
    busybox: bool = True,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    workdir_in_image: str = "/",
    exposed_ports: Iterable[int] = (),
) -> Path:
    """Build a one-layer image; return the OCI layout directory holding it as ``tag``.

    ``files`` maps absolute paths in the image to contents (bytes, mode 0644) or to a
    host file or directory to copy. ``entrypoint``/``cmd`` of None leave them unset.
    ``PATH`` defaults to :data:`DEFAULT_PATH`; ``env`` adds to or overrides it.
    """
    layout = workdir / "layout"
    bundle = workdir / "bundle"
    image = f"{layout}:{tag}"
    await asyncio.to_thread(_fresh_dirs, workdir, layout, bundle)
    await _run("umoci", "init", "--layout", str(layout))
    await _run("umoci", "new", "--image", image)
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    await _run("umoci", "unpack", *rootless, "--image", image, str(bundle))
    await asyncio.to_thread(_populate, bundle / "rootfs", files, busybox)
    await _run("umoci", "repack", "--image", image, str(bundle))

    config = ["--config.workingdir", workdir_in_image]
    for key, value in {"PATH": DEFAULT_PATH, **(env or {})}.items():
        config += ["--config.env", f"{key}={value}"]
    for port in exposed_ports:
        config += ["--config.exposedports", f"{port}/tcp"]
    for flag, values in (("entrypoint", entrypoint), ("cmd", cmd)):
        if values is not None and not values:
            config += ["--clear", f"config.{flag}"]
        for value in values or ():
            config += [f"--config.{flag}", value]
    await _run("umoci", "config", "--image", image, *config)
    await _run("umoci", "gc", "--layout", str(layout))
    await asyncio.to_thread(shutil.rmtree, bundle)
    return layout


async def push(layout: Path, tag: str, dest: str) -> None:
    """Copy ``layout:tag`` to the registry reference ``dest`` (``host:port/repo:tag``)."""
    await _run(
        "skopeo",
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout}:{tag}",
        f"docker://{dest}",
    )


async def seed_demo_images(registry_addr: str, workdir: Path) -> dict[str, str]:
    """Build and push every :data:`DEMO_IMAGES` entry the registry lacks.

    Returns name → reference (``ADDR/roost/hello:latest``). Images already in the
    registry are left as they are, so seeding on every server start is cheap.
    """
    refs = {name: f"{registry_addr}/{name}:{DEMO_TAG}" for name in DEMO_IMAGES}
    async with RegistryClient(insecure=[registry_addr]) as client:
        present = await asyncio.gather(*(_exists(client, ref) for ref in refs.values()))

    async def seed(name: str) -> None:
        demo = DEMO_IMAGES[name]
        build_dir = workdir / name.replace("/", "_")
        layout = await build_image(
            build_dir,
            tag=DEMO_TAG,
            files=demo.files,
            entrypoint=list(demo.entrypoint) if demo.entrypoint is not None else None,
            cmd=list(demo.cmd) if demo.cmd is not None else None,
            exposed_ports=demo.exposed_ports,
        )
        await push(layout, DEMO_TAG, refs[name])
        await asyncio.to_thread(shutil.rmtree, build_dir)

    await asyncio.gather(*(seed(n) for n, have in zip(refs, present, strict=True) if not have))
    return refs


async def _exists(client: RegistryClient, ref: str) -> bool:
    try:
        await client.resolve(parse_reference(ref))
    except ImageNotFound:
        return False
    except PullError as e:
        raise ImageError(f"cannot seed demo images: {e}") from e
    return True


def _fresh_dirs(workdir: Path, *dirs: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        if d.exists():
            shutil.rmtree(d)


def _populate(rootfs: Path, files: Mapping[str, bytes | Path], busybox: bool) -> None:
    if busybox:
        _install_busybox(rootfs)
    for name, content in files.items():
        rel = PurePosixPath(name)
        if not rel.is_absolute() or ".." in rel.parts:
            raise ImageError(f"image file path must be absolute, without '..': {name!r}")
        dest = rootfs.joinpath(*rel.parts[1:])
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            dest.write_bytes(content)
            dest.chmod(0o644)
        elif content.is_dir():
            shutil.copytree(content, dest, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(content, dest)


def _install_busybox(rootfs: Path) -> None:
    source = shutil.which("busybox")
    if source is None:
        raise ImageError("busybox is not installed (apt-get install busybox-static)")
    bin_dir = rootfs / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, bin_dir / "busybox")
    applets = subprocess.run(
        [source, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    # what `busybox --install -s /bin` does inside a chroot: absolute links to /bin/busybox
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            (bin_dir / applet).symlink_to("/bin/busybox")
    for d in _BASE_DIRS:
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    tmp = rootfs / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")


async def _run(*argv: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as e:
        raise ImageError(f"cannot run {argv[0]}: {e}") from e
    try:
        out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise ImageError(
            f"{' '.join(argv[:2])} failed (exit {proc.returncode}): "
            f"{err.decode(errors='replace').strip()}"
        )
    return out.decode(errors="replace")
