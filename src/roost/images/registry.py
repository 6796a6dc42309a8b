"""Pull side of the OCI distribution API over httpx: manifests, blobs, token auth."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import platform
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import httpx

from roost import __version__
from roost.images.base import ImageNotFound, ImageRef, PullError

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})
MANIFEST_TYPES = frozenset({MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST})
_ACCEPT = ", ".join([MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST])

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_MAX_MANIFEST = 4 * 1024 * 1024
_FLUSH = 1024 * 1024
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]"})
_HUB_API = "registry-1.docker.io"

Credentials = Mapping[str, tuple[str, str]] | Callable[[str], tuple[str, str] | None]
"""``registry → (username, password)``, as a mapping or a lookup function."""

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_platform() -> str:
    """``linux/<GOARCH>`` of this machine, the platform picked from multi-platform images."""
    machine = platform.machine().lower()
    return f"linux/{_ARCHES.get(machine, machine)}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: object, what: str) -> str:
    """``digest`` if it is a well-formed sha256 digest; it ends up in file names."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise PullError(f"{what}: unsupported or malformed digest {digest!r}")
    return digest


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")


@dataclass(frozen=True, slots=True)
class Manifest:
    """The image manifest a reference resolves to on this host's platform."""

    digest: str
    """What the reference resolved to: the index's digest for a multi-platform image."""
    manifest_digest: str
    """Digest of ``raw``, the platform-specific image manifest (``digest`` if there is no index)."""
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes


class _BlobSink:
    """A temp file beside the destination that hashes what is written to it."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        self.hash = hashlib.sha256()
        self.file: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit/discard

    def write(self, data: bytes | bytearray) -> None:
        self.hash.update(data)
        self.file.write(data)

    def commit(self, digest: str) -> None:
        self.file.close()
        got = "sha256:" + self.hash.hexdigest()
        if got != digest:
            raise PullError(f"digest mismatch for blob {digest}: got {got}")
        os.replace(self.tmp, self.dest)

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class RegistryClient:
    """Fetches manifests and blobs; one instance may serve many registries.

    Registries named in ``insecure`` (``host`` or ``host:port``) and loopback ones are
    spoken to over plain http, all others over https.
    """

    def __init__(
        self,
        *,
        insecure: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        credentials: Credentials | None = None,
        platform: str | None = None,
    ) -> None:
        self._insecure = frozenset(insecure)
        self._credentials = credentials
        self._platform = (platform or host_platform()).split("/")
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=True,
            headers={"User-Agent": f"roost/{__version__}"},
        )
        self._auth: dict[tuple[str, str], str] = {}
        """(registry, repository) → Authorization header that worked last."""

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def base_url(self, registry: str) -> str:
        """``scheme://host[:port]`` of the registry's API (Docker Hub's is not docker.io)."""
        if registry.startswith("["):
            host = registry[: registry.find("]") + 1]
        else:
            host = registry.partition(":")[0]
        plain = host in _LOOPBACK or registry in self._insecure or host in self._insecure
        if registry == "docker.io":
            registry = _HUB_API
        return f"{'http' if plain else 'https'}://{registry}"

    async def resolve(self, ref: ImageRef) -> Manifest:
        """The manifest ``ref`` names, for this host's platform if it names an index."""
        media_type, raw, doc = await self._get_manifest(ref, ref.digest or ref.tag, ref.digest)
        digest = sha256_digest(raw)
        if media_type in INDEX_TYPES:
            chosen = self._pick_platform(ref, doc)
            media_type, raw, doc = await self._get_manifest(ref, chosen.digest, chosen.digest)
        if media_type not in MANIFEST_TYPES:
            raise PullError(f"{ref}: unsupported manifest type {media_type!r}")
        return Manifest(
            digest=digest,
            manifest_digest=sha256_digest(raw),
            media_type=media_type,
            config=_descriptor(doc.get("config"), f"config of {ref}"),
            layers=tuple(
                _descriptor(layer, f"layer of {ref}") for layer in _list(doc.get("layers"))
            ),
            raw=raw,
        )

    async def fetch_blob(self, ref: ImageRef, blob: Descriptor, dest: Path) -> None:
        """Stream blob into ``dest`` (atomically), checking its size and sha256 digest."""
        check_digest(blob.digest, f"blob of {ref}")
        url = f"{self.base_url(ref.registry)}/v2/{ref.repository}/blobs/{blob.digest}"
        # layers are compressed already: re-encoding them in transit only costs CPU
        response = await self._send(ref, url, {"Accept-Encoding": "identity"}, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                raise self._status_error(ref, response, f"blob {blob.digest}")
            length = response.headers.get("Content-Length")
            encoded = "Content-Encoding" in response.headers
            if length is not None and not encoded and length.isdigit() and int(length) != blob.size:
                raise PullError(
                    f"size mismatch for blob {blob.digest}: registry sends {length} bytes, "
                    f"manifest says {blob.size}"
                )
            await self._stream(ref, response, blob, dest)
        finally:
            await response.aclose()

    async def _stream(
        self, ref: ImageRef, response: httpx.Response, blob: Descriptor, dest: Path
    ) -> None:
        sink = await asyncio.to_thread(_BlobSink, dest)
        try:
            received = 0
            buffer = bytearray()
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > blob.size:
                    raise PullError(
                        f"size mismatch for blob {blob.digest}: more than {blob.size} bytes"
                    )
                buffer += chunk
                if len(buffer) >= _FLUSH:
                    data, buffer = buffer, bytearray()
                    await asyncio.to_thread(sink.write, data)
            if buffer:
                await asyncio.to_thread(sink.write, buffer)
            if received != blob.size:
                raise PullError(
                    f"size mismatch for blob {blob.digest}: got {received} bytes, "
                    f"manifest says {blob.size}"
                )
            await asyncio.to_thread(sink.commit, blob.digest)
        except httpx.HTTPError as e:
            sink.discard()
            raise PullError(
                f"download of blob {blob.digest} from {ref.registry} failed: {_reason(e)}"
            ) from e
        except BaseException:
            sink.discard()
            raise

    async def _get_manifest(
        self, ref: ImageRef, reference: str, digest: str
    ) -> tuple[str, bytes, dict[str, Any]]:
        """(media type, raw bytes, parsed document); ``digest``, if given, is verified."""
        url = f"{self.base_url(ref.registry)}/v2/{ref.repository}/manifests/{reference}"
        response = await self._send(ref, url, {"Accept": _ACCEPT})
        if response.status_code != 200:
            raise self._status_error(ref, response, f"manifest {reference}")
        raw = response.content
        if len(raw) > _MAX_MANIFEST:
            raise PullError(f"{ref}: manifest larger than {_MAX_MANIFEST} bytes")
        got = sha256_digest(raw)
        if digest and got != digest:
            raise PullError(f"digest mismatch for manifest of {ref}: expected {digest}, got {got}")
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed != got:
            raise PullError(
                f"digest mismatch for manifest of {ref}: registry says {claimed}, got {got}"
            )
        doc = _parse_json(raw, f"manifest of {ref}")
        media_type = doc.get("mediaType") or response.headers.get("Content-Type", "")
        media_type = media_type.split(";")[0].strip()
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            if doc.get("schemaVersion") == 1:
                raise PullError(f"{ref}: Docker schema 1 manifests are not supported")
            # OCI allows omitting mediaType; some registries then send a generic type
            media_type = MEDIA_OCI_INDEX if "manifests" in doc else MEDIA_OCI_MANIFEST
        return media_type, raw, doc

    def _pick_platform(self, ref: ImageRef, index: dict[str, Any]) -> Descriptor:
        want_os, want_arch, *variant = self._platform
        matches: list[tuple[bool, dict[str, Any]]] = []
        seen: list[str] = []
        for entry in _list(index.get("manifests")):
            plat = entry.get("platform") if isinstance(entry, dict) else None
            if not isinstance(plat, dict):
                continue
            seen.append("/".join(filter(None, (plat.get("os"), plat.get("architecture")))))
            if plat.get("os") == want_os and plat.get("architecture") == want_arch:
                matches.append((plat.get("variant") in variant, entry))
        if not matches:
            raise PullError(
                f"{ref} has no image for {'/'.join(self._platform)} "
                f"(available: {', '.join(sorted(set(seen))) or 'none'})"
            )
        # stable: the first entry with the exact variant, else the first for the arch
        matches.sort(key=lambda m: not m[0])
        return _descriptor(matches[0][1], f"manifest list of {ref}")

    async def _send(
        self, ref: ImageRef, url: str, headers: dict[str, str], *, stream: bool = False
    ) -> httpx.Response:
        key = (ref.registry, ref.repository)
        response = await self._send_once(ref, url, headers, key, stream)
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            await response.aclose()
            self._auth[key] = await self._authorize(ref, challenge)
            response = await self._send_once(ref, url, headers, key, stream)
        if response.status_code in (401, 403):
            await response.aclose()
            raise PullError(
                f"pull access denied for {ref.registry}/{ref.repository}: "
                "unauthorized (the repository may not exist or may need credentials)"
            )
        return response

    async def _send_once(
        self,
        ref: ImageRef,
        url: str,
        headers: dict[str, str],
        key: tuple[str, str],
        stream: bool,
    ) -> httpx.Response:
        headers = dict(headers)
        if auth := self._auth.get(key):
            headers["Authorization"] = auth
        try:
            request = self._http.build_request("GET", url, headers=headers)
            return await self._http.send(request, stream=stream)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise PullError(f"registry {ref.registry} is unreachable: {_reason(e)}") from e

    async def _authorize(self, ref: ImageRef, challenge: str) -> str:
        scheme, _, rest = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        creds = self._lookup_credentials(ref.registry)
        if scheme.lower() == "basic":
            if creds is None:
                raise PullError(f"registry {ref.registry} requires credentials to pull {ref}")
            return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        if scheme.lower() != "bearer" or "realm" not in params:
            raise PullError(
                f"registry {ref.registry} asked for unsupported authentication {challenge!r}"
            )
        query = {"scope": params.get("scope") or f"repository:{ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        try:
            response = await self._http.get(
                params["realm"], params=query, auth=httpx.BasicAuth(*creds) if creds else None
            )
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise PullError(
                f"token server {params['realm']} for {ref.registry} is unreachable: {_reason(e)}"
            ) from e
        if response.status_code != 200:
            raise PullError(
                f"pull access denied for {ref.registry}/{ref.repository}: "
                f"token server answered HTTP {response.status_code}"
            )
        body = _parse_json(response.content, f"token from {params['realm']}")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise PullError(f"token server {params['realm']} sent no token")
        return f"Bearer {token}"

    def _lookup_credentials(self, registry: str) -> tuple[str, str] | None:
        if self._credentials is None:
            return None
        if callable(self._credentials):
            return self._credentials(registry)
        return self._credentials.get(registry)

    def _status_error(self, ref: ImageRef, response: httpx.Response, what: str) -> PullError:
        codes, messages = _registry_errors(response)
        status = response.status_code
        if status == 404 or {"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"} & codes:
            if "NAME_UNKNOWN" in codes:
                return ImageNotFound(f"repository {ref.registry}/{ref.repository} not found")
            if what.startswith("blob"):
                return ImageNotFound(f"{what} of {ref} not found in the registry")
            return ImageNotFound(f"image {ref} not found: manifest unknown")
        detail = f": {'; '.join(messages)}" if messages else ""
        if status == 429:
            return PullError(f"registry {ref.registry} is rate limiting pulls of {ref}{detail}")
        return PullError(
            f"registry {ref.registry} answered HTTP {status} for {what} of {ref}{detail}"
        )


def _registry_errors(response: httpx.Response) -> tuple[set[str], list[str]]:
    try:
        errors = json.loads(response.content).get("errors")
    except (ValueError, AttributeError):
        return set(), []
    codes: set[str] = set()
    messages: list[str] = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            codes.add(str(error.get("code", "")))
            if error.get("message"):
                messages.append(str(error["message"]))
    return codes, messages


def _reason(e: Exception) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    # httpx says "All connection attempts failed"; the OSError underneath says why
    cause: BaseException | None = e
    for _ in range(10):
        if cause is None:
            break
        if isinstance(cause, OSError) and cause.errno is not None:
            return os.strerror(cause.errno) if cause.errno > 0 else str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
    return str(e) or type(e).__name__


def _parse_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise PullError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise PullError(f"{what} is not a JSON object")
    return doc


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _descriptor(value: object, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise PullError(f"{what}: malformed descriptor")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PullError(f"{what}: malformed size {size!r}")
    return Descriptor(
        media_type=str(value.get("mediaType", "")),
        digest=check_digest(value.get("digest"), what),
        size=size,
    )
