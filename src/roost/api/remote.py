"""``HostLink`` for an API that runs apart from the machines: it calls each host's agent.

In a fleet, ``roost api`` holds no machine. To exec in one, list its processes, open
its console or read its logs, it finds the machine's host in the store (``/mids`` →
``/machines`` → ``/hosts``) and calls the agent endpoint there
(``roost.agent.endpoint``), showing the fleet's secret. Whatever goes wrong on the way
becomes a ``DriverError`` naming the host and what to check, which the API answers
with a 412.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from roost.agent.endpoint import PREFIX
from roost.agent.logs import FOLLOW_QUEUE, LogRecord
from roost.cluster import HEADER, alive_hosts
from roost.runtime.base import DriverError, ExecResult
from roost.store import Store, StoreError
from roost.store.records import (
    HOSTS_PREFIX,
    HostRecord,
    MachineRecord,
    alive_key,
    host_key,
    machine_key,
    mid_key,
)

log = logging.getLogger("roost.api")

CALL_TIMEOUT = 5.0
EXEC_MARGIN = 10.0
"""Beyond an exec's own timeout: the agent kills it at the timeout and still answers."""
RECONNECT_DELAY = 2.0
LOST_EXIT_CODE = 255
"""A console's exit code when its host went away first, as ssh reports a lost link."""

_background: set[asyncio.Task[None]] = set()


class RemoteHosts:
    """Links the API to the agents of every host, over their endpoints."""

    def __init__(
        self, store: Store, secret: str, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self._fleet = _Fleet(store, secret, client or httpx.AsyncClient(trust_env=False))
        self._owns_client = client is None
        self._feeds: set[RemoteLogFeed] = set()

    async def close(self) -> None:
        for feed in list(self._feeds):
            feed.close()
        if self._owns_client:
            await self._fleet.client.aclose()

    async def exec(
        self, machine_id: str, argv: list[str], *, timeout: float, stdin: bytes
    ) -> ExecResult:
        host = await self._fleet.machine_host(machine_id)
        body = {"argv": argv, "timeout": timeout, "stdin": base64.b64encode(stdin).decode()}
        out = await self._fleet.call(
            host, "POST", f"/machines/{machine_id}/exec", json=body, timeout=timeout + EXEC_MARGIN
        )
        return ExecResult(
            exit_code=out["exit_code"],
            signal=out["signal"],
            stdout=base64.b64decode(out["stdout"]),
            stderr=base64.b64decode(out["stderr"]),
            timed_out=out["timed_out"],
        )

    async def processes(self, machine_id: str) -> list[dict[str, Any]]:
        host = await self._fleet.machine_host(machine_id)
        processes: list[dict[str, Any]] = await self._fleet.call(
            host, "GET", f"/machines/{machine_id}/processes"
        )
        return processes

    async def terminal(
        self, machine_id: str, argv: list[str], *, cols: int, rows: int
    ) -> RemoteTerminal:
        host = await self._fleet.machine_host(machine_id)
        query = urlencode([("cols", cols), ("rows", rows), *(("argv", arg) for arg in argv)])
        websocket = await self._fleet.open(host, f"/machines/{machine_id}/console?{query}")
        return RemoteTerminal(websocket, host)

    async def read_logs(
        self, machine_id: str, *, since: float | None, limit: int
    ) -> list[LogRecord]:
        # A follow subscribes, then reads history: its streams must be in place on the
        # hosts first, or lines written in between would be in neither.
        await asyncio.gather(
            *(f.subscribed.wait() for f in list(self._feeds) if machine_id in f.machine_ids)
        )
        host = await self._fleet.machine_host(machine_id)
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        records = await self._fleet.call(host, "GET", f"/machines/{machine_id}/logs", params=params)
        return [LogRecord(**record) for record in records]

    def subscribe_logs(self, machine_ids: set[str]) -> RemoteLogFeed:
        feed = RemoteLogFeed(self._fleet, machine_ids, on_close=self._feeds.discard)
        self._feeds.add(feed)
        return feed

    async def isolate(self, host_id: str) -> None:
        host = await self._fleet.host(host_id)
        await self._fleet.call(host, "POST", f"/hosts/{host_id}/isolate")

    async def restore(self, host_id: str) -> None:
        # An isolated host is not alive in the store, yet its endpoint still answers.
        host = await self._fleet.host(host_id, alive=False)
        await self._fleet.call(host, "POST", f"/hosts/{host_id}/restore")

    async def usage(
        self, app: str | None, *, since: float | None, until: float | None
    ) -> list[dict[str, Any]]:
        """Every live host's machines, concatenated; a host that does not answer is left
        out (and logged), so one host down does not hide the others' usage."""
        params = {
            k: v for k, v in (("app", app), ("since", since), ("until", until)) if v is not None
        }
        hosts = await self._fleet.alive_hosts()
        answers = await asyncio.gather(*(self._host_usage(host, params) for host in hosts))
        return [row for rows in answers for row in rows]

    async def _host_usage(self, host_id: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            rows: list[dict[str, Any]] = await self._fleet.call(
                await self._fleet.host(host_id), "GET", "/usage", params=params
            )
        except DriverError as exc:
            log.warning("usage leaves out host %s: %s", host_id, exc)
            return []
        return rows


@dataclass(frozen=True)
class _Host:
    """Where to call a host's agent, and how to name it in errors."""

    id: str
    address: str
    machine: str | None = None

    def __str__(self) -> str:
        return f"host {self.id}" + (f" of machine {self.machine}" if self.machine else "")

    def refused(self, status: int, body: bytes) -> DriverError:
        if status == 401:
            return DriverError(
                f"{self} refused this API: the cluster secret is wrong; run the API and the "
                "agents on the same store, where the fleet's secret is kept"
            )
        try:
            message = str(json.loads(body)["error"])
        except (ValueError, KeyError, TypeError):
            message = body.decode(errors="replace")[:200]
        if status in (400, 412):
            return DriverError(message)
        return DriverError(f"{self} failed (HTTP {status}): {message}")


class _Fleet:
    """Finding hosts in the store and calling their agents."""

    def __init__(self, store: Store, secret: str, client: httpx.AsyncClient) -> None:
        self.store = store
        self.client = client
        self._headers = {HEADER: secret}

    async def machine_host(self, machine_id: str) -> _Host:
        record = await self.machine_record(machine_id)
        if record is None:
            raise DriverError(f"machine {machine_id} does not exist")
        return await self.host(record.host_id, machine_id)

    async def machine_record(self, machine_id: str) -> MachineRecord | None:
        app = await self.store.get(mid_key(machine_id))
        kv = await self.store.get(machine_key(app.value, machine_id)) if app else None
        return MachineRecord.from_json(kv.value) if kv else None

    async def host(
        self, host_id: str, machine_id: str | None = None, *, alive: bool = True
    ) -> _Host:
        """The host's endpoint; unless ``alive`` is False, only while it renews liveness."""
        kv = await self.store.get(host_key(host_id))
        host = _Host(host_id, HostRecord.from_json(kv.value).address if kv else "", machine_id)
        if kv is None or (alive and await self.store.get(alive_key(host_id)) is None):
            raise DriverError(
                f"{host} is unreachable; its agent is not running (it has not reported in): "
                "start it, or wait for the machine to be moved"
            )
        if not host.address:
            raise DriverError(
                f"{host} is unreachable; it registered no agent endpoint: run `roost agent` "
                "there, not `roost server`"
            )
        return host

    async def alive_hosts(self) -> list[str]:
        alive = await alive_hosts(self.store)
        registered = (await self.store.range(HOSTS_PREFIX)).kvs
        return [h for kv in registered if (h := kv.key.removeprefix(HOSTS_PREFIX)) in alive]

    async def call(
        self, host: _Host, method: str, path: str, *, timeout: float = CALL_TIMEOUT, **kwargs: Any
    ) -> Any:
        try:
            response = await self.client.request(
                method,
                f"http://{host.address}{PREFIX}{path}",
                headers=self._headers,
                timeout=timeout,
                **kwargs,
            )
        except httpx.TransportError as exc:
            raise _unreachable(host, exc) from None
        if response.status_code != 200:
            raise host.refused(response.status_code, response.content)
        return response.json()

    async def open(self, host: _Host, path: str) -> ClientConnection:
        try:
            return await connect(
                f"ws://{host.address}{PREFIX}{path}",
                additional_headers=self._headers,
                open_timeout=CALL_TIMEOUT,
                proxy=None,
            )
        except InvalidStatus as exc:
            raise host.refused(exc.response.status_code, exc.response.body or b"") from None
        except (OSError, InvalidHandshake) as exc:
            raise _unreachable(host, exc) from None


def _unreachable(host: _Host, exc: Exception) -> DriverError:
    why = str(exc) or type(exc).__name__
    return DriverError(
        f"{host} is unreachable; its agent at {host.address} did not answer ({why}): "
        "check that it runs and that this API can reach it"
    )


class RemoteTerminal:
    """A terminal in a machine on another host, carried over its agent's WebSocket in
    the framing of ``roost.api.console``. Output is read only as fast as it is asked
    for, so a slow client holds the machine's output back, as on the host itself."""

    def __init__(self, websocket: ClientConnection, host: _Host) -> None:
        self._websocket = websocket
        self._host = host
        self._exit_code: int | None = None
        # wait() reads through the output too; two readers at once would interleave it.
        self._reading = asyncio.Lock()

    async def read(self) -> bytes | None:
        async with self._reading:
            while True:
                try:
                    message = await self._websocket.recv()
                except ConnectionClosed:
                    return None
                if isinstance(message, bytes):
                    return message
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self._exit_code = int(json.loads(message)["exit_code"])

    async def write(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):  # the end shows in read()
            await self._websocket.send(data)

    def resize(self, cols: int, rows: int) -> None:
        _later(self._websocket.send(json.dumps({"resize": {"cols": cols, "rows": rows}})))

    async def wait(self) -> int:
        # The exit code comes after the last output.
        while await self.read() is not None:
            pass
        if self._exit_code is None:
            log.warning("the console's link to %s closed before its program exited", self._host)
            return LOST_EXIT_CODE
        return self._exit_code

    def close(self) -> None:
        _later(self._websocket.close())


def _later(sending: Awaitable[None]) -> None:
    """Send from a task: the ``Terminal`` protocol's resize and close are synchronous."""

    async def send() -> None:
        with contextlib.suppress(ConnectionClosed):
            await sending

    task = asyncio.ensure_future(send())
    _background.add(task)
    task.add_done_callback(_background.discard)


class RemoteLogFeed:
    """New log records of machines on other hosts: one follow per host, fanned into one
    queue. A host's follow that breaks (its agent restarted) is reopened; what its
    machines logged in between is not in the feed, but is in their history."""

    def __init__(
        self,
        fleet: _Fleet,
        machine_ids: set[str],
        *,
        on_close: Callable[[RemoteLogFeed], None],
    ) -> None:
        self.machine_ids = machine_ids
        self.subscribed = asyncio.Event()
        """Set once every host's follow has been tried: records from then on are fed."""
        self._fleet = fleet
        self._on_close = on_close
        self._queue: asyncio.Queue[LogRecord] = asyncio.Queue(maxsize=FOLLOW_QUEUE)
        self._task = asyncio.ensure_future(self._run())

    async def next(self) -> LogRecord:
        return await self._queue.get()

    def close(self) -> None:
        self._task.cancel()
        self.subscribed.set()
        self._on_close(self)

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as followers:
                tried = []
                for host_id, machines in (await self._by_host()).items():
                    tried.append(asyncio.Event())
                    followers.create_task(self._follow(host_id, machines, tried[-1]))
                for event in tried:
                    await event.wait()
                self.subscribed.set()
        finally:
            # However this ends (closed, or a bug), read_logs must not wait on it forever.
            self.subscribed.set()

    async def _by_host(self) -> dict[str, set[str]]:
        by_host: dict[str, set[str]] = {}
        for mid in self.machine_ids:
            try:
                record = await self._fleet.machine_record(mid)
            except StoreError as exc:
                log.warning("not following the logs of machine %s: %s", mid, exc)
                continue
            # A machine gone from the store logs nothing more.
            if record is not None:
                by_host.setdefault(record.host_id, set()).add(mid)
        return by_host

    async def _follow(self, host_id: str, machines: set[str], tried: asyncio.Event) -> None:
        path = "/logs/follow?" + urlencode([("machine", m) for m in sorted(machines)])
        broken = False
        while True:
            try:
                websocket = await self._fleet.open(await self._fleet.host(host_id), path)
                tried.set()
                if broken:
                    log.info("following logs on host %s again", host_id)
                broken = False
                async with websocket:
                    async for message in websocket:
                        self._put(LogRecord(**json.loads(message)))
                why = "its agent closed the follow"
            except (DriverError, ConnectionClosed, StoreError) as exc:
                why = str(exc)
            tried.set()
            if not broken:
                log.warning(
                    "following logs on host %s: %s; retrying every %ss",
                    host_id,
                    why,
                    RECONNECT_DELAY,
                )
            broken = True
            await asyncio.sleep(RECONNECT_DELAY)

    def _put(self, record: LogRecord) -> None:
        # As on the host: a reader too slow to keep up loses lines rather than our memory.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(record)
