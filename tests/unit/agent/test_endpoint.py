"""The agent endpoint and ``RemoteHosts`` together: real servers on 127.0.0.1 in front of
fake hosts, found through a real store, as an API in another process finds them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from roost.agent.endpoint import create_endpoint, serve_endpoint
from roost.agent.logs import LogRecord
from roost.api import remote as remote_module
from roost.api.remote import RemoteHosts
from roost.cluster import HEADER
from roost.roles.serving import AsgiServer
from roost.runtime.base import DriverError, ExecResult
from roost.store.records import (
    HostRecord,
    MachineRecord,
    alive_key,
    host_key,
    machine_key,
    mid_key,
)
from roost.store.sqlite import SqliteStore

SECRET = "s3cret"
APP = "web"
M1 = "0123456789abcd"  # on host a
M2 = "fedcba98765432"  # on host b
M3 = "aaaaaaaaaaaaaa"  # on host a, which does not know it
GONE = "bbbbbbbbbbbbbb"  # on host dead: registered, not alive
DOWN = "cccccccccccccc"  # on host down: alive, but nothing listens at its address
EVENTUALLY = 5.0
T = TypeVar("T")


@dataclass
class FakeTerminal:
    argv: list[str]
    size: tuple[int, int]
    input: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    output: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    resized: asyncio.Queue[tuple[int, int]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int = 0

    async def read(self) -> bytes | None:
        return await self.output.get()

    async def write(self, data: bytes) -> None:
        self.input.put_nowait(data)

    def resize(self, cols: int, rows: int) -> None:
        self.resized.put_nowait((cols, rows))

    async def wait(self) -> int:
        return self.exit_code

    def close(self) -> None:
        self.closed.set()

    def exit(self, code: int) -> None:
        self.exit_code = code
        self.output.put_nowait(None)


@dataclass
class FakeSubscription:
    machines: set[str]
    queue: asyncio.Queue[LogRecord] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self) -> LogRecord:
        return await self.queue.get()

    def close(self) -> None:
        self.closed.set()


@dataclass
class FakeHost:
    """A LocalHost stand-in: canned answers, and what the endpoint asked of it."""

    name: str
    machines: set[str]
    logs: list[LogRecord] = field(default_factory=list)
    terminals: asyncio.Queue[FakeTerminal] = field(default_factory=asyncio.Queue)
    subscriptions: asyncio.Queue[FakeSubscription] = field(default_factory=asyncio.Queue)
    usage_asked: list[tuple[str | None, float | None, float | None]] = field(default_factory=list)

    def _known(self, machine_id: str) -> None:
        if machine_id not in self.machines:
            raise DriverError(f"machine {machine_id} is not running on {self.name}")

    async def exec(
        self, machine_id: str, argv: list[str], *, timeout: float, stdin: bytes
    ) -> ExecResult:
        self._known(machine_id)
        if argv == ["cat"]:
            return ExecResult(0, None, stdin, b"")
        if argv[0] == "sleep":
            return ExecResult(137, 9, b"", b"", timed_out=float(argv[1]) > timeout)
        return ExecResult(3, None, b"", f"{argv[0]}: not found\n".encode())

    async def processes(self, machine_id: str) -> list[dict[str, Any]]:
        self._known(machine_id)
        return [{"pid": 1, "command": "init"}, {"pid": 7, "command": "httpd"}]

    async def terminal(
        self, machine_id: str, argv: list[str], *, cols: int, rows: int
    ) -> FakeTerminal:
        self._known(machine_id)
        terminal = FakeTerminal(argv, (cols, rows))
        self.terminals.put_nowait(terminal)
        return terminal

    async def read_logs(
        self, machine_id: str, *, since: float | None, limit: int
    ) -> list[LogRecord]:
        records = [
            r
            for r in self.logs
            if r.machine == machine_id and (since is None or r.timestamp >= since)
        ]
        return records[-limit:] if limit else records

    def subscribe_logs(self, machine_ids: set[str]) -> FakeSubscription:
        subscription = FakeSubscription(machine_ids)
        self.subscriptions.put_nowait(subscription)
        return subscription

    async def usage(
        self, app: str | None, *, since: float | None, until: float | None
    ) -> list[dict[str, Any]]:
        self.usage_asked.append((app, since, until))
        return [{"machine": m, "app": app or APP} for m in sorted(self.machines)]


@dataclass
class Fleet:
    store: SqliteStore
    remote: RemoteHosts
    a: FakeHost
    b: FakeHost
    endpoints: dict[str, AsgiServer]
    down_address: str


def free_address() -> str:
    """An address nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def register(
    store: SqliteStore, host: str, address: str, machines: list[str], *, alive: bool = True
) -> None:
    await store.put(host_key(host), HostRecord(id=host, region="test", address=address).to_json())
    if alive:
        await store.put(alive_key(host), "1")
    for mid in machines:
        record = MachineRecord(
            id=mid,
            app=APP,
            name=f"m-{mid}",
            region="test",
            host_id=host,
            config={},
            version="v1",
            desired="started",
        )
        await store.put(mid_key(mid), APP)
        await store.put(machine_key(APP, mid), record.to_json())


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with contextlib.AsyncExitStack() as stack:
        store = await SqliteStore.open(tmp_path / "store.db")
        stack.push_async_callback(store.close)
        a = FakeHost("a", {M1})
        b = FakeHost("b", {M2})
        endpoints: dict[str, AsgiServer] = {}
        # Closed together: each takes a tick of uvicorn's main loop to notice.
        stack.push_async_callback(lambda: asyncio.gather(*(e.close() for e in endpoints.values())))
        for host, machines in ((a, [M1, M3]), (b, [M2])):
            server = await serve_endpoint(create_endpoint(host, SECRET), "127.0.0.1:0")
            endpoints[host.name] = server
            await register(store, host.name, server.address, machines)
        await register(store, "dead", free_address(), [GONE], alive=False)
        down_address = free_address()
        await register(store, "down", down_address, [DOWN])
        remote = RemoteHosts(store, SECRET)
        stack.push_async_callback(remote.close)
        yield Fleet(store, remote, a, b, endpoints, down_address)


async def eventually(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, EVENTUALLY)


async def test_exec_round_trip(fleet: Fleet) -> None:
    echoed = await fleet.remote.exec(M1, ["cat"], timeout=5, stdin=b"\x00hello\xff")
    assert echoed == ExecResult(0, None, b"\x00hello\xff", b"")

    failed = await fleet.remote.exec(M1, ["nope"], timeout=5, stdin=b"")
    assert (failed.exit_code, failed.stderr) == (3, b"nope: not found\n")

    slow = await fleet.remote.exec(M1, ["sleep", "60"], timeout=1.5, stdin=b"")
    assert (slow.exit_code, slow.signal, slow.timed_out) == (137, 9, True)


async def test_processes(fleet: Fleet) -> None:
    assert await fleet.remote.processes(M2) == [
        {"pid": 1, "command": "init"},
        {"pid": 7, "command": "httpd"},
    ]


async def test_read_logs(fleet: Fleet) -> None:
    fleet.a.logs = [
        LogRecord(10.0, M1, "stdout", "one"),
        LogRecord(11.5, M1, "event", "two"),
        LogRecord(12.0, M1, "stderr", "three ✓"),
    ]
    assert await fleet.remote.read_logs(M1, since=None, limit=0) == fleet.a.logs
    assert await fleet.remote.read_logs(M1, since=11.0, limit=1) == fleet.a.logs[2:]


async def test_follow_logs_from_every_host(fleet: Fleet) -> None:
    feed = fleet.remote.subscribe_logs({M1, M2})
    try:
        # History is read only once the hosts follow: nothing written between is lost.
        await fleet.remote.read_logs(M1, since=None, limit=0)
        on_a = fleet.a.subscriptions.get_nowait()
        on_b = fleet.b.subscriptions.get_nowait()
        assert (on_a.machines, on_b.machines) == ({M1}, {M2})

        first, second = LogRecord(20.0, M1, "stdout", "from a"), LogRecord(21.0, M2, "stderr", "b")
        on_a.queue.put_nowait(first)
        assert await eventually(feed.next()) == first
        on_b.queue.put_nowait(second)
        assert await eventually(feed.next()) == second
    finally:
        feed.close()
    await eventually(on_a.closed.wait())
    await eventually(on_b.closed.wait())


async def test_follow_reopens_when_the_agent_comes_back(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_module, "RECONNECT_DELAY", 0.01)
    feed = fleet.remote.subscribe_logs({M2})
    try:
        await eventually(feed.subscribed.wait())
        before = fleet.b.subscriptions.get_nowait()
        await fleet.endpoints["b"].close()
        await eventually(before.closed.wait())

        restarted = await serve_endpoint(create_endpoint(fleet.b, SECRET), "127.0.0.1:0")
        try:
            await register(fleet.store, "b", restarted.address, [])
            after = await eventually(fleet.b.subscriptions.get())
            record = LogRecord(30.0, M2, "stdout", "back")
            after.queue.put_nowait(record)
            assert await eventually(feed.next()) == record
        finally:
            feed.close()
            await eventually(after.closed.wait())
            await restarted.close()
    finally:
        feed.close()


async def test_follow_skips_unknown_machines(fleet: Fleet) -> None:
    feed = fleet.remote.subscribe_logs({M1, "dddddddddddddd"})
    try:
        await eventually(feed.subscribed.wait())
        assert fleet.a.subscriptions.get_nowait().machines == {M1}
        assert fleet.b.subscriptions.empty()
    finally:
        feed.close()


async def test_console_round_trip(fleet: Fleet) -> None:
    terminal = await fleet.remote.terminal(M1, ["/bin/sh", "-l"], cols=80, rows=24)
    try:
        fake = fleet.a.terminals.get_nowait()
        assert (fake.argv, fake.size) == (["/bin/sh", "-l"], (80, 24))

        await terminal.write(b"echo hi\r")
        assert await eventually(fake.input.get()) == b"echo hi\r"
        fake.output.put_nowait(b"hi\r\n$ ")
        assert await eventually(terminal.read()) == b"hi\r\n$ "
        terminal.resize(132, 43)
        assert await eventually(fake.resized.get()) == (132, 43)

        fake.output.put_nowait(b"bye")
        fake.exit(7)
        assert await eventually(terminal.read()) == b"bye"
        assert await eventually(terminal.read()) is None
        assert await eventually(terminal.wait()) == 7
    finally:
        terminal.close()
    await eventually(fake.closed.wait())


async def test_console_closed_by_the_client_ends_on_the_host(fleet: Fleet) -> None:
    terminal = await fleet.remote.terminal(M2, ["/bin/sh"], cols=10, rows=5)
    fake = fleet.b.terminals.get_nowait()
    terminal.close()
    await eventually(fake.closed.wait())


async def test_console_outlived_by_its_host_exits_255(fleet: Fleet) -> None:
    terminal = await fleet.remote.terminal(M2, ["/bin/sh"], cols=10, rows=5)
    fake = fleet.b.terminals.get_nowait()
    await fleet.endpoints["b"].close()
    assert await eventually(terminal.wait()) == 255
    await eventually(fake.closed.wait())


async def test_usage_of_every_live_host(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="roost.api"):
        rows = await fleet.remote.usage(APP, since=0.0, until=None)
    assert rows == [{"machine": M1, "app": APP}, {"machine": M2, "app": APP}]
    assert fleet.a.usage_asked == fleet.b.usage_asked == [(APP, 0.0, None)]
    # Host dead is not alive, so not asked; host down is, and is left out loudly.
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "host down" in warnings[0] and fleet.down_address in warnings[0]


async def test_wrong_secret(fleet: Fleet) -> None:
    intruder = RemoteHosts(fleet.store, "guess")
    try:
        with pytest.raises(
            DriverError,
            match=rf"host a of machine {M1} refused this API: the cluster secret is wrong",
        ):
            await intruder.exec(M1, ["cat"], timeout=5, stdin=b"")
        with pytest.raises(DriverError, match="cluster secret is wrong"):
            await intruder.terminal(M1, ["/bin/sh"], cols=80, rows=24)
    finally:
        await intruder.close()
    assert fleet.a.terminals.empty()


async def test_hosts_out_of_reach(fleet: Fleet) -> None:
    with pytest.raises(DriverError, match=f"host dead of machine {GONE} is unreachable"):
        await fleet.remote.processes(GONE)
    with pytest.raises(DriverError, match=f"host down of machine {DOWN} is unreachable"):
        await fleet.remote.exec(DOWN, ["cat"], timeout=5, stdin=b"")
    with pytest.raises(DriverError, match=f"host down of machine {DOWN} is unreachable"):
        await fleet.remote.terminal(DOWN, ["/bin/sh"], cols=80, rows=24)


async def test_unknown_machines(fleet: Fleet) -> None:
    with pytest.raises(DriverError, match=f"^machine {M3} is not running on a$"):
        await fleet.remote.exec(M3, ["cat"], timeout=5, stdin=b"")
    with pytest.raises(DriverError, match=f"^machine {M3} is not running on a$"):
        await fleet.remote.terminal(M3, ["/bin/sh"], cols=80, rows=24)
    with pytest.raises(DriverError, match="machine dddddddddddddd does not exist"):
        await fleet.remote.processes("dddddddddddddd")


async def test_endpoint_refusals(fleet: Fleet) -> None:
    base = f"http://{fleet.endpoints['a'].address}/internal/v1"
    async with httpx.AsyncClient(base_url=base, headers={HEADER: SECRET}) as client:
        anonymous = await client.get(f"/machines/{M1}/processes", headers={HEADER: ""})
        assert anonymous.status_code == 401 and HEADER in anonymous.json()["error"]

        bad_id = await client.get("/machines/NOT-AN-ID/processes")
        assert bad_id.status_code == 400 and "not a machine id" in bad_id.json()["error"]

        no_argv = await client.post(f"/machines/{M1}/exec", json={"argv": [], "timeout": 1})
        assert no_argv.status_code == 400 and "argv" in no_argv.json()["error"]

        bad_stdin = await client.post(
            f"/machines/{M1}/exec", json={"argv": ["cat"], "timeout": 1, "stdin": "a!"}
        )
        assert bad_stdin.status_code == 400 and "stdin" in bad_stdin.json()["error"]

        bad_limit = await client.get(f"/machines/{M1}/logs", params={"limit": -1})
        assert bad_limit.status_code == 400 and "limit" in bad_limit.json()["error"]

        unknown = await client.get(f"/machines/{M3}/processes")
        assert unknown.status_code == 412
        assert unknown.json() == {"error": f"machine {M3} is not running on a"}
