"""TLS for the proxy's HTTPS listener: a given certificate, or a local certificate authority.

Without a certificate of their own, users get a CA made once in the data dir
(``tls/ca.crt``): trust it once, and every app's ``<app>.<domain>`` gets a certificate
signed by it the first time a client asks for that name (TLS SNI), kept on disk after.
Wildcards would not do: TLS clients refuse ``*.localhost``, a wildcard over one label.
"""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

_HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")


class TlsError(Exception):
    """A certificate could not be made or loaded."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load certificate {cert} and key {key}: {exc}") from exc
    context.set_alpn_protocols(["http/1.1"])
    return context


class LocalAuthority:
    """Issues certificates for ``<app>.<domain>`` names on demand."""

    def __init__(self, directory: Path, domain: str) -> None:
        self.directory = directory
        self.domain = domain
        self.cert = directory / "ca.crt"
        self.key = directory / "ca.key"
        self._contexts: dict[str, ssl.SSLContext] = {}

    def context(self) -> ssl.SSLContext:
        """The listener's context: the bare domain's certificate, others chosen by SNI."""
        self._ensure_ca()
        default = self._for(self.domain)
        default.sni_callback = self._pick
        return default

    def _pick(self, conn: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if not name:
            return
        name = name.lower()
        if name.endswith(f".{self.domain}") and _HOSTNAME.match(name):
            try:
                conn.context = self._for(name)
            except TlsError:
                # The handshake goes on with the default certificate; the client will
                # say the name does not match, which is the truth.
                return

    def _for(self, name: str) -> ssl.SSLContext:
        context = self._contexts.get(name)
        if context is None:
            cert, key = self._issue(name)
            context = server_context(cert, key)
            self._contexts[name] = context
        return context

    def _ensure_ca(self) -> None:
        if self.cert.exists() and self.key.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "3650", "-subj", "/CN=roost local CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(self.key), "-out", str(self.cert),
        )  # fmt: skip
        self.key.chmod(0o600)

    def _issue(self, name: str) -> tuple[Path, Path]:
        hosts = self.directory / "hosts"
        cert, key, request = hosts / f"{name}.crt", hosts / f"{name}.key", hosts / f"{name}.csr"
        if cert.exists() and key.exists():
            return cert, key
        hosts.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
            "-keyout", str(key), "-out", str(request),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", "825", "-copy_extensions", "copy", "-out", str(cert),
        )  # fmt: skip
        key.chmod(0o600)
        request.unlink()
        return cert, key


def _openssl(*args: str) -> None:
    try:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TlsError(f"cannot run openssl: {exc}") from exc
    if result.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {result.stderr.strip()}")
