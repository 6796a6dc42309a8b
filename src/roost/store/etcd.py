"""etcd v3 backend of the Store contract, for multi-host installs.

It speaks to etcd's JSON gateway (``/v3/``, served by etcd itself on the client URL)
with httpx, so it needs no gRPC stack. Requests go straight to an httpx transport: the
client layer (cookies, redirects, auth) roughly doubled the per-request cost.

How the contract maps onto etcd:

* Revisions, create/mod revisions, versions and lease ids are etcd's own. An empty etcd
  is at revision 1, not 0. Keys and values travel base64-encoded, int64 fields as JSON
  strings, and the gateway leaves out fields that are zero, empty or false.
* A prefix is etcd's range ``[prefix, prefix_end(prefix))``; the empty prefix is every
  key. Empty keys are invalid (``ValueError``) for every call, since etcd rejects them.
* Events of one revision are yielded in key order, as the SQLite backend does; etcd
  itself reports a txn's puts in the order of the operations.
* A txn may hold at most etcd's ``--max-txn-ops`` operations (128 by default); more
  raise ``ValueError``, like etcd's other request checks (duplicate keys, empty keys).

Leases: etcd grants whole seconds. A TTL is rounded up to a second, then etcd raises it
to its minimum, 1.5 election timeouts rounded up: 2 s with etcd's default timings, 1 s
with the fast ones of :mod:`roost.store.etcd_server`. So ``grant_lease(0.3)`` lives at
least 1 s. The leader checks for expired leases every 500 ms, so keys go up to about
half a second after their TTL; a leader change renews every lease.

Endpoints and failover: requests stick to the endpoint that last answered. One that
certainly did not reach etcd (connection refused, or a member without a leader: every
request asks for one via the gRPC metadata ``hasleader``) moves on to the next endpoint,
and rounds over all endpoints repeat with backoff until ``timeout`` has passed, which
waits out an election or a quick restart. A write whose connection broke or timed out
after it was sent may have been applied, so it is not resent: it raises
:class:`StoreUnavailable`. That is what a write in flight when the leader dies gets
after ``timeout``: the follower forwarded it to the dead leader, where etcd loses it.
Reads and lease calls, which are safe to repeat, are resent.

Watches: each is one streaming ``POST /v3/watch`` without a read timeout, so quiet
periods are fine; TCP keepalive notices a peer that vanished without closing the
connection, and etcd (asked for a leader) cancels the stream of a member that lost
its leader. When the stream breaks, the watch reconnects by itself, to the next
endpoint and with backoff, from the revision after the last one it delivered: the
consumer sees no gap and no duplicate. Only if it has had no stable stream (one that
lasts a second) for ``reconnect_timeout`` does it raise :class:`StoreUnavailable` (the
caller re-lists), and if the revisions it needs were compacted meanwhile it raises
:class:`Compacted`. Watches ask for etcd's progress notifications, which move the
resume point forward on a quiet prefix so that a resume does not needlessly hit
compacted history.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import socket
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

from roost.store.base import (
    KV,
    Compacted,
    Compare,
    Delete,
    LeaseNotFound,
    Put,
    RangeResult,
    Store,
    StoreError,
    StoreUnavailable,
    TxnResult,
    WatchEvent,
)
from roost.store.sqlite import prefix_end

_TARGETS = {
    "mod_revision": "MOD",
    "create_revision": "CREATE",
    "version": "VERSION",
    "value": "VALUE",
}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}

# gRPC status codes, as the gateway reports them in error bodies.
_UNKNOWN = 2
_INVALID_ARGUMENT = 3
_DEADLINE_EXCEEDED = 4
_UNAVAILABLE = 14

_NO_LEADER = "etcdserver: no leader"
_LEASE_NOT_FOUND = "lease not found"
_COMPACTED = "required revision has been compacted"
_FUTURE_REVISION = "required revision is a future revision"

_HEADERS = {
    "content-type": "application/json",
    # The gateway forwards Grpc-Metadata-* headers as gRPC metadata. "hasleader" makes a
    # member without a leader refuse requests at once (instead of holding them until
    # etcd's own timeout) and cancel watch streams when it loses its leader.
    "grpc-metadata-hasleader": "true",
}

# Detects a peer that vanished without closing the connection (power loss, partition)
# on an otherwise silent watch stream: about 30 + 3 * 10 s.
_SOCKET_OPTIONS = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
]

# Backoff between rounds over the endpoints, and between watch reconnects.
_RETRY_MIN = 0.02
_RETRY_MAX = 0.5
# A watch stream that lasted this long worked: losing it restarts the reconnect budget.
_STABLE_STREAM = 1.0

# The request surely never reached etcd: safe to send to another endpoint.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _StreamLost(Exception):
    """A watch stream ended or was cancelled by etcd for a reason worth reconnecting."""


class EtcdStore(Store):
    """The Store contract on an etcd ≥ 3.4 cluster, reached at ``endpoints``.

    ``endpoints`` are client URLs (``http://host:2379``) of the cluster's members.
    ``timeout`` bounds each HTTP exchange, and how long a request keeps trying
    endpoints that do not answer. ``reconnect_timeout`` is how long a watch keeps
    trying to re-establish its stream before raising :class:`StoreUnavailable`.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        reconnect_timeout: float = 10.0,
    ) -> None:
        if isinstance(endpoints, str) or not endpoints:
            raise ValueError("endpoints must be a non-empty list of URLs")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._endpoints = [url.rstrip("/") for url in endpoints]
        self._timeout = timeout
        self._reconnect_timeout = reconnect_timeout
        self._preferred = 0
        self._closed = False
        self._transport = httpx.AsyncHTTPTransport(
            # Every watch holds a connection for as long as it runs.
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=32, keepalive_expiry=30
            ),
            socket_options=_SOCKET_OPTIONS,
        )

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    @property
    def endpoint(self) -> str:
        """The endpoint requests currently go to first."""
        return self._endpoints[self._preferred]

    # Store contract

    async def get(self, key: str) -> KV | None:
        reply = await self._call("/v3/kv/range", _range(key, prefix=False), resend=True)
        kvs = reply.get("kvs")
        return _kv(kvs[0]) if kvs else None

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        body: dict[str, Any] = _range(prefix, prefix=True)
        if limit > 0:
            body["limit"] = str(limit)
        reply = await self._call("/v3/kv/range", body, resend=True)
        return RangeResult([_kv(raw) for raw in reply.get("kvs", ())], _revision(reply))

    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        return _revision(await self._call("/v3/kv/put", _put(Put(key, value, lease))))

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        return _revision(await self._call("/v3/kv/deleterange", _range(key, prefix=prefix)))

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Put | Delete] = (),
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        body = {
            "compare": [_compare(c) for c in compare],
            "success": [_op(op) for op in success],
            "failure": [_op(op) for op in failure],
        }
        reply = await self._call("/v3/kv/txn", body)
        return TxnResult(bool(reply.get("succeeded")), _revision(reply))

    async def watch(self, prefix: str, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        if from_revision < 1:
            raise ValueError("from_revision must be at least 1")
        create = {**_range(prefix, prefix=True), "prev_kv": True, "progress_notify": True}
        next_revision = from_revision
        loop = asyncio.get_running_loop()
        # When the watch last lost a stable stream (or started), when its current stream
        # was established, and the pause before the next attempt: none after losing a
        # stable stream, so a cluster fails over at once; growing while attempts fail
        # or streams drop right away, so a restarting etcd is not hammered.
        lost_at = loop.time()
        connected_at: float | None = None
        delay = 0.0
        while True:
            self._check_open()
            index = self._preferred
            endpoint = self._endpoints[index]
            body = {"create_request": {**create, "start_revision": str(next_revision)}}
            try:
                response = await self._send(endpoint, "/v3/watch", body, read_timeout=None)
                try:
                    if response.status_code != 200:
                        content = await response.aread()
                        _raise_watch_error(
                            _decode(content, response.status_code), response.status_code
                        )
                    async for line in response.aiter_lines():
                        if not line:
                            continue
                        result = _watch_result(json.loads(line))
                        if result.get("created"):
                            self._preferred = index
                            connected_at = loop.time()
                        elif events := result.get("events"):
                            decoded = sorted(
                                (_event(raw) for raw in events),
                                key=lambda e: (e.kv.mod_revision, e.kv.key),
                            )
                            for event in decoded:
                                yield event
                            # etcd never splits a revision across responses, so every
                            # event up to here has been delivered.
                            next_revision = decoded[-1].kv.mod_revision + 1
                        else:
                            # A progress notification: nothing under the prefix changed
                            # up to its revision.
                            next_revision = max(next_revision, _revision(result) + 1)
                    failure = f"{endpoint}: watch stream ended"
                finally:
                    await response.aclose()
            except _StreamLost as e:
                failure = f"{endpoint}: {e}"
            except httpx.TransportError as e:
                failure = f"{endpoint}: {e!r}"
            except Exception:
                # close() tears connections down under running watches.
                self._check_open()
                raise
            self._check_open()
            self._demote(index)
            now = loop.time()
            if connected_at is not None and now - connected_at >= _STABLE_STREAM:
                lost_at, delay = now, 0.0
            elif now - lost_at >= self._reconnect_timeout:
                raise StoreUnavailable(
                    f"watch of {prefix!r} has had no stable stream for "
                    f"{self._reconnect_timeout} s; last error: {failure}"
                )
            connected_at = None
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, _RETRY_MIN), _RETRY_MAX)

    async def grant_lease(self, ttl: float) -> int:
        if not ttl > 0:
            raise ValueError("lease ttl must be positive")
        reply = await self._call("/v3/lease/grant", {"TTL": math.ceil(ttl)}, resend=True)
        return int(reply["ID"])

    async def keepalive(self, lease: int) -> None:
        reply = await self._call("/v3/lease/keepalive", {"ID": str(lease)}, resend=True)
        # A streaming call: the reply is wrapped in "result", and a gone lease has TTL 0.
        if not int(reply.get("result", {}).get("TTL", 0)):
            raise LeaseNotFound(f"lease {lease} not found")

    async def revoke_lease(self, lease: int) -> None:
        with contextlib.suppress(LeaseNotFound):
            await self._call("/v3/lease/revoke", {"ID": str(lease)}, resend=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._transport.aclose()

    # etcd-only operations

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision``; watching from before it raises Compacted.

        Unlike the SQLite backend, the compaction revision itself stays watchable.
        Compacting at or below an earlier compaction does nothing.
        """
        try:
            await self._call(
                "/v3/kv/compaction", {"revision": str(revision), "physical": True}, resend=True
            )
        except StoreError as e:
            if _COMPACTED not in str(e):
                raise

    # HTTP

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")

    def _demote(self, index: int) -> None:
        """Stop preferring the endpoint at ``index`` (if it still is the preferred one)."""
        if self._preferred == index:
            self._preferred = (index + 1) % len(self._endpoints)

    async def _send(
        self, endpoint: str, path: str, body: dict[str, Any], *, read_timeout: float | None
    ) -> httpx.Response:
        timeout = {
            "connect": self._timeout,
            "read": read_timeout,
            "write": self._timeout,
            "pool": self._timeout,
        }
        request = httpx.Request(
            "POST",
            endpoint + path,
            content=json.dumps(body).encode(),
            headers=_HEADERS,
            extensions={"timeout": timeout},
        )
        return await self._transport.handle_async_request(request)

    async def _call(
        self, path: str, body: dict[str, Any], *, resend: bool = False
    ) -> dict[str, Any]:
        """POST ``body`` to the gateway and decode the reply, failing over as needed.

        ``resend``: the call is safe to repeat, so it may go to another endpoint even
        after it may have reached etcd.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        delay = _RETRY_MIN
        while True:
            failure = ""
            start = self._preferred
            for step in range(len(self._endpoints)):
                index = (start + step) % len(self._endpoints)
                endpoint = self._endpoints[index]
                try:
                    response = await self._send(endpoint, path, body, read_timeout=self._timeout)
                    try:
                        content = await response.aread()
                    finally:
                        await response.aclose()
                except httpx.TransportError as e:
                    self._check_open()
                    self._demote(index)
                    if not (resend or isinstance(e, _NOT_SENT)):
                        raise StoreUnavailable(
                            f"{endpoint}{path}: {e!r}; the request may have been applied"
                        ) from e
                    failure = f"{endpoint}: {e!r}"
                    continue
                reply = _decode(content, response.status_code)
                error = _grpc_error(reply, response.status_code)
                if error is None:
                    self._preferred = index
                    return reply
                code, message = error
                if code == _UNAVAILABLE and (resend or message == _NO_LEADER):
                    self._demote(index)
                    failure = f"{endpoint}: {message}"
                    continue
                raise _exception(code, message)
            if loop.time() + delay > deadline:
                raise StoreUnavailable(
                    f"no etcd endpoint answered {path} within {self._timeout} s; "
                    f"last error: {failure}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)


# Encoding


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _text(data: str) -> str:
    return base64.b64decode(data).decode()


def _range(key: str, *, prefix: bool) -> dict[str, str]:
    if not prefix:
        return {"key": _b64(key)}
    end = prefix_end(key)
    if end is None:
        # The empty prefix: etcd spells "every key" as ["\0", "\0").
        return {"key": _b64(b"\0"), "range_end": _b64(b"\0")}
    return {"key": _b64(key), "range_end": _b64(end)}


def _put(op: Put) -> dict[str, str]:
    return {"key": _b64(op.key), "value": _b64(op.value), "lease": str(op.lease)}


def _op(op: Put | Delete) -> dict[str, Any]:
    if isinstance(op, Put):
        return {"request_put": _put(op)}
    return {"request_delete_range": _range(op.key, prefix=op.prefix)}


def _compare(c: Compare) -> dict[str, str]:
    if c.target not in _TARGETS:
        raise ValueError(f"unknown compare target {c.target!r}")
    if c.op not in _RESULTS:
        raise ValueError(f"unknown compare op {c.op!r}")
    if c.target == "value":
        if not isinstance(c.operand, str):
            raise TypeError(f"value compares need a str operand: {c!r}")
        operand = _b64(c.operand)
    else:
        if not isinstance(c.operand, int) or isinstance(c.operand, bool):
            raise TypeError(f"{c.target} compares need an int operand: {c!r}")
        operand = str(c.operand)
    return {
        "key": _b64(c.key),
        "target": _TARGETS[c.target],
        "result": _RESULTS[c.op],
        c.target: operand,
    }


# Decoding


def _revision(reply: dict[str, Any]) -> int:
    return int(reply["header"].get("revision", 0))


def _kv(raw: dict[str, Any]) -> KV:
    return KV(
        key=_text(raw["key"]),
        value=_text(raw.get("value", "")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


def _event(raw: dict[str, Any]) -> WatchEvent:
    prev = raw.get("prev_kv")
    return WatchEvent(
        "delete" if raw.get("type") == "DELETE" else "put",
        _kv(raw["kv"]),
        _kv(prev) if prev is not None else None,
    )


def _decode(content: bytes, status: int) -> dict[str, Any]:
    try:
        reply = json.loads(content)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise StoreUnavailable(f"etcd gateway answered HTTP {status}: {content[:200]!r}")
    return reply


def _grpc_error(reply: dict[str, Any], status: int = 200) -> tuple[int, str] | None:
    error = reply.get("error")
    if error is None:
        return None if status == 200 else (_UNKNOWN, f"HTTP {status}: {reply!r}")
    if isinstance(error, dict):
        # Streaming calls report errors in-band, in this shape.
        return int(error.get("grpc_code", _UNKNOWN)), str(error.get("message", ""))
    return int(reply.get("code", _UNKNOWN)), str(reply.get("message") or error)


def _exception(code: int, message: str) -> Exception:
    if _LEASE_NOT_FOUND in message:
        return LeaseNotFound(message)
    if code == _INVALID_ARGUMENT or _FUTURE_REVISION in message:
        return ValueError(message)
    if code in (_UNAVAILABLE, _DEADLINE_EXCEEDED):
        return StoreUnavailable(message)
    return StoreError(f"{message} (gRPC code {code})")


def _raise_watch_error(reply: dict[str, Any], status: int) -> None:
    code, message = _grpc_error(reply, status) or (_UNKNOWN, f"unexpected reply {reply!r}")
    if code == _INVALID_ARGUMENT:
        raise _exception(code, message)
    # Anything else means the stream broke, e.g. "no leader", or "the client connection
    # is closing" (Canceled) from the gateway of a member shutting down: reconnect.
    raise _StreamLost(message)


def _watch_result(message: dict[str, Any]) -> dict[str, Any]:
    """The watch response in one line of the stream; raises for errors and cancels."""
    if "result" not in message:
        _raise_watch_error(message, 200)
    result: dict[str, Any] = message["result"]
    if result.get("canceled"):
        if compacted := int(result.get("compact_revision", 0)):
            raise Compacted(compacted)
        raise _StreamLost(result.get("cancel_reason") or "watch cancelled by etcd")
    return result
