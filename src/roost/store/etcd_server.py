"""Throwaway etcd servers on loopback, for tests and ``roost`` dev setups.

Runs Debian's ``/usr/bin/etcd`` (3.4) as plain ``subprocess.Popen`` children, not bound
to an event loop, so a server may be started and stopped from different loops (e.g.
session-scoped test fixtures). Give them a tmpfs data dir when durability does not
matter: etcd 3.4 has no ``--unsafe-no-fsync`` and fsyncs every write.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from roost.store.base import StoreError

ETCD_BINARY = "/usr/bin/etcd"

PR_SET_PDEATHSIG = 1

_LOG_TAIL = 2000

# Timings that make elections (and so startup and failover) fast on loopback. They also
# lower etcd's minimum lease TTL to 1 s (1.5 election timeouts, rounded up to seconds).
FAST_HEARTBEAT_MS = 50
FAST_ELECTION_MS = 500


def tmpfs_dir(prefix: str = "roost-etcd-") -> Path:
    """A new directory on tmpfs (``/dev/shm``) if there is one, else in the temp dir.

    etcd fsyncs every write; on tmpfs that costs nothing, which suits throwaway data.
    """
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=shm if shm.is_dir() else None))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (etcd cannot be told to listen on port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalEtcd:
    """One etcd member: ``name`` with its data in ``data_dir``.

    Alone by default; members of a cluster share ``initial_cluster`` (see
    :class:`LocalEtcdCluster`). The log goes to ``log_path`` (default: beside the data
    dir) and its tail is quoted when the server fails to start. ``extra_args`` are
    more etcd flags, e.g. ``--experimental-watch-progress-notify-interval=1s``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        client_port: int,
        peer_port: int,
        name: str = "n1",
        host: str = "127.0.0.1",
        initial_cluster: str | None = None,
        cluster_token: str = "roost",
        heartbeat_ms: int = FAST_HEARTBEAT_MS,
        election_ms: int = FAST_ELECTION_MS,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        binary: str = ETCD_BINARY,
    ) -> None:
        self.data_dir = data_dir
        self.name = name
        self.host = host
        self.client_port = client_port
        self.peer_port = peer_port
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token
        # etcd refuses to start otherwise; failing here names the cause.
        if election_ms < 5 * heartbeat_ms:
            raise ValueError("election_ms must be at least 5 times heartbeat_ms")
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.log_path = log_path or data_dir.with_name(f"{data_dir.name}.log")
        self.extra_args = list(extra_args)
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL, an endpoint for :class:`roost.store.etcd.EtcdStore`."""
        return f"http://{_url_host(self.host)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def start(self, timeout: float = 10.0) -> None:
        """Start etcd and return once ``/health`` reports healthy (it has a leader)."""
        self.spawn()
        try:
            await self.wait_healthy(timeout)
        except BaseException:
            await self.kill()
            raise

    def spawn(self) -> None:
        """Start the process without waiting; cluster members must all run to elect."""
        if self._proc is not None:
            raise StoreError(f"etcd {self.name} is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        # The signal fires when the spawning *thread* exits, so only the main thread (which
        # lives as long as the process) may ask for it; others rely on stop() and kill().
        die_with_parent = threading.current_thread() is threading.main_thread()
        try:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        except OSError as e:
            self._close_log()
            raise StoreError(f"cannot start {self.binary}: {e}") from e

    async def wait_healthy(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            raise StoreError(f"etcd {self.name} is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while True:
                if (code := proc.poll()) is not None:
                    raise StoreError(
                        f"etcd {self.name} exited with code {code}: {self._log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError, ValueError):
                    response = await http.get(f"{self.url}/health")
                    if response.json().get("health") == "true":
                        return
                if loop.time() >= deadline:
                    raise StoreError(
                        f"etcd {self.name} not healthy within {timeout} s: {self._log_tail()}"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)

    async def stop(self, timeout: float = 5.0) -> None:
        """Shut down cleanly (SIGTERM; SIGKILL after ``timeout``); a no-op if not running."""
        proc = self._proc
        if proc is not None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self._reset()

    async def kill(self) -> None:
        """SIGKILL, as a crash would; the data dir stays for a restart."""
        proc = self._proc
        if proc is not None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        self._reset()

    async def restart(self, timeout: float = 10.0) -> None:
        """Stop (if running) and start again on the same data dir and ports."""
        await self.stop()
        await self.start(timeout)

    def kill_now(self) -> None:
        """SIGKILL without awaiting, for cleanup paths outside any event loop."""
        proc = self._proc
        if proc is not None:
            proc.kill()
            proc.wait()
        self._reset()

    async def __aenter__(self) -> LocalEtcd:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.cluster_token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            # zap: the default capnslog logger warns that it is deprecated on every start.
            "--logger", "zap",
            "--log-level", "error",
            *self.extra_args,
        ]  # fmt: skip

    def _reset(self) -> None:
        self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_bytes()[-_LOG_TAIL:].decode(errors="replace")
        except OSError:
            return "(no log)"
        return text.strip() or "(empty log)"


class LocalEtcdCluster:
    """``size`` members on loopback with free ports, data dirs ``root/<name>``."""

    def __init__(
        self,
        root: Path,
        *,
        size: int = 3,
        host: str = "127.0.0.1",
        heartbeat_ms: int = FAST_HEARTBEAT_MS,
        election_ms: int = FAST_ELECTION_MS,
        extra_args: Sequence[str] = (),
    ) -> None:
        names = [f"n{i}" for i in range(1, size + 1)]
        ports = [(free_port(host), free_port(host)) for _ in names]
        peers = ",".join(
            f"{name}=http://{_url_host(host)}:{peer}"
            for name, (_, peer) in zip(names, ports, strict=True)
        )
        self.members = [
            LocalEtcd(
                root / name,
                client_port=client,
                peer_port=peer,
                name=name,
                host=host,
                initial_cluster=peers,
                cluster_token=f"roost-{root.name}",
                heartbeat_ms=heartbeat_ms,
                election_ms=election_ms,
                extra_args=extra_args,
            )
            for name, (client, peer) in zip(names, ports, strict=True)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [member.url for member in self.members]

    async def start(self, timeout: float = 10.0) -> None:
        """Start every member; returns once all are healthy (a leader is elected)."""
        try:
            for member in self.members:
                member.spawn()
            await asyncio.gather(*(m.wait_healthy(timeout) for m in self.members))
        except BaseException:
            await self.kill()
            raise

    async def stop(self) -> None:
        """Stop every member cleanly, the leader last.

        A leader stopping while followers run first hands its leadership over, and when
        they are stopping too that waits out etcd's request timeout (about 6 s).
        """
        try:
            leader: LocalEtcd | None = await self.leader()
        except StoreError:
            leader = None
        await asyncio.gather(*(m.stop() for m in self.members if m is not leader))
        if leader is not None:
            await leader.stop()

    async def kill(self) -> None:
        await asyncio.gather(*(member.kill() for member in self.members))

    async def leader(self) -> LocalEtcd:
        """The member that is currently the raft leader."""
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            for member in self.members:
                if not member.running:
                    continue
                with contextlib.suppress(httpx.TransportError):
                    status = await http.post(f"{member.url}/v3/maintenance/status", json={})
                    body = status.json()
                    if body.get("leader") and body["leader"] == body["header"]["member_id"]:
                        return member
        raise StoreError("no etcd member is the leader")

    async def __aenter__(self) -> LocalEtcdCluster:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _die_with_parent() -> None:
    # An etcd outliving a crashed test run or dev server would hold its ports and data dir.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
