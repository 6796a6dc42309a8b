"""A throwaway ``docker-registry`` (distribution 2.x) on loopback, for demos and tests."""

from __future__ import annotations

import asyncio
import ctypes
import json
import secrets
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from roost.images.base import ImageError

_LOG_TAIL = 2000


PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (docker-registry cannot listen on port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """``docker-registry serve`` with filesystem storage under ``root``.

    The process is a plain ``subprocess.Popen``, not bound to an event loop, so it may
    be started and stopped from different loops (e.g. session-scoped test fixtures).
    """

    def __init__(
        self, root: Path, listen: str = "127.0.0.1:5000", *, die_with_parent: bool = False
    ) -> None:
        self.root = root
        self.listen = listen
        # Off by default: the signal fires when the spawning *thread* exits, and test
        # fixtures start registries from short-lived threads.
        self.die_with_parent = die_with_parent
        self.config_path = root / "registry.yml"
        self.log_path = root / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def addr(self) -> str:
        """``host:port``, the registry part of references to images in it."""
        return self.listen

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def start(self, timeout: float = 10.0) -> None:
        """Start the registry and return once ``GET /v2/`` answers 200."""
        if self._proc is not None:
            raise ImageError(f"registry on {self.listen} is already started")
        proc = await asyncio.to_thread(self._spawn)
        try:
            await self._wait_ready(proc, timeout)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = 5.0) -> None:
        """Terminate the registry (SIGKILL after ``timeout``); a no-op if not started."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> LocalRegistry:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Another server on the port would answer /v2/ for us while ours dies on bind.
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, int(port)))
            except (OSError, ValueError) as e:
                raise ImageError(f"registry cannot listen on {self.listen}: {e}") from e
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        self.config_path.write_text(self._config())
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        except OSError as e:
            self._log.close()
            self._log = None
            raise ImageError(f"cannot start docker-registry: {e}") from e
        return self._proc

    def _config(self) -> str:
        # JSON strings are valid YAML scalars, which spares quoting rules for paths
        q = json.dumps
        return "\n".join(
            [
                "version: 0.1",
                "log:",
                "  level: warn",
                "  accesslog:",
                "    disabled: true",
                "storage:",
                "  filesystem:",
                f"    rootdirectory: {q(str(self.root / 'data'))}",
                "  delete:",
                "    enabled: true",
                "http:",
                f"  addr: {q(self.listen)}",
                # a fixed secret silences the "generated random secret" warning
                f"  secret: {q(secrets.token_hex(16))}",
                "",
            ]
        )

    async def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while True:
                if (code := proc.poll()) is not None:
                    raise ImageError(
                        f"docker-registry on {self.listen} exited with code {code}: "
                        f"{self._log_tail()}"
                    )
                try:
                    if (await http.get(f"{self.url}/v2/")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if loop.time() >= deadline:
                    raise ImageError(
                        f"docker-registry on {self.listen} did not answer within {timeout} s: "
                        f"{self._log_tail()}"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_bytes()[-_LOG_TAIL:].decode(errors="replace")
        except OSError:
            return "(no log)"
        return text.strip() or "(empty log)"


def _die_with_parent() -> None:
    # A registry outliving a crashed server would hold the port against its restart.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
