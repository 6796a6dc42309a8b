"""Health checks the agent runs against its started machines.

Top-level ``config.checks`` keep their names; service checks are named as Fly names
them (``servicecheck-00-http-8080``). Each check probes the machine's private address
every ``interval`` after ``grace_period``; results are reported only when a check's
status or output changes, so steady machines cost the store nothing.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from roost.spec.config import MachineCheck, MachineConfig

DEFAULT_INTERVAL = 15.0
DEFAULT_TIMEOUT = 2.0
MAX_OUTPUT = 200

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NamedCheck:
    name: str
    check: MachineCheck
    port: int


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: str
    """``passing``, ``warning`` (not run yet) or ``critical``."""
    output: str
    updated_at: str

    def wire(self) -> dict[str, str]:
        return {
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "updated_at": self.updated_at,
        }


def machine_checks(config: MachineConfig) -> list[NamedCheck]:
    out = []
    for name, check in sorted((config.checks or {}).items()):
        if check.port:
            out.append(NamedCheck(name, check, check.port))
    for service in config.services or []:
        for index, check in enumerate(service.checks or []):
            port = check.port or service.internal_port
            out.append(NamedCheck(f"servicecheck-{index:02d}-{check.type}-{port}", check, port))
    return out


async def probe(check: MachineCheck, address: str, port: int) -> tuple[bool, str]:
    """One attempt: (passed, output)."""
    timeout = check.timeout or DEFAULT_TIMEOUT
    try:
        async with asyncio.timeout(timeout):
            if check.type == "tcp":
                _, writer = await asyncio.open_connection(address, port)
                writer.close()
                return True, "connection succeeded"
            return await _http(check, address, port)
    except TimeoutError:
        return False, f"timed out after {timeout:g}s"
    except OSError as exc:
        return False, f"connect to {address}:{port} failed: {exc.strerror or exc}"


async def _http(check: MachineCheck, address: str, port: int) -> tuple[bool, str]:
    context = None
    if check.protocol == "https":
        context = ssl.create_default_context()
        if check.tls_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    host = f"[{address}]" if ":" in address else address
    reader, writer = await asyncio.open_connection(
        address, port, ssl=context, server_hostname=check.tls_server_name if context else None
    )
    try:
        lines = [
            f"{(check.method or 'GET').upper()} {check.path or '/'} HTTP/1.1",
            f"Host: {host}:{port}",
            "User-Agent: roost-health-check",
            "Connection: close",
        ]
        for header in check.headers or []:
            lines.extend(f"{header.name}: {value}" for value in header.values)
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1").strip()
    finally:
        writer.close()
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"invalid HTTP response: {status_line[:MAX_OUTPUT]!r}"
    code = int(parts[1])
    return 200 <= code < 400, f"HTTP {code}"


class CheckRunner:
    """Runs one machine's checks until stopped; calls ``on_change`` with all results."""

    def __init__(
        self,
        checks: list[NamedCheck],
        address: str,
        on_change: Callable[[list[CheckResult]], Awaitable[None]],
        *,
        stamp: Callable[[], str],
        sleep: Sleep = asyncio.sleep,
        probe_fn: Callable[[MachineCheck, str, int], Awaitable[tuple[bool, str]]] = probe,
    ) -> None:
        self._checks = checks
        self._address = address
        self._on_change = on_change
        self._stamp = stamp
        self._sleep = sleep
        self._probe = probe_fn
        self._results = {
            c.name: CheckResult(c.name, "warning", "not checked yet", stamp()) for c in checks
        }
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def results(self) -> list[CheckResult]:
        return list(self._results.values())

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(c)) for c in self._checks]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _loop(self, named: NamedCheck) -> None:
        check = named.check
        await self._sleep(check.grace_period or 0.0)
        while True:
            began = time.monotonic()
            passed, output = await self._probe(check, self._address, named.port)
            status = "passing" if passed else "critical"
            previous = self._results[named.name]
            if (previous.status, previous.output) != (status, output):
                self._results[named.name] = CheckResult(named.name, status, output, self._stamp())
                await self._on_change(self.results)
            interval = check.interval or DEFAULT_INTERVAL
            await self._sleep(max(0.0, interval - (time.monotonic() - began)))
