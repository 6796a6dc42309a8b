"""The Store contract: a revisioned key-value store with transactions, leases and watches.

Shaped after etcd v3 so the multi-host backend is a thin mapping, and so the embedded
SQLite backend gives single-node users the same semantics:

* Every write bumps one store-wide ``revision`` (an int that only grows). Each key
  remembers the revision that created it, the revision of its last change and how
  many times it was written since creation (``version``).
* ``txn`` applies puts and deletes atomically when all its comparisons hold.
* A lease has a TTL; keys attached to it vanish (with delete events) when it expires
  without a keepalive, or when it is revoked.
* ``watch(prefix, from_revision)`` yields every change at or after that revision, in
  order. If the revision was compacted away it raises :class:`Compacted`; watchers
  re-list at the current revision and watch from ``revision + 1``.

Keys and values are ``str``; callers encode JSON themselves (see ``roost.store.records``).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Literal


class StoreError(Exception):
    """Base of every store failure."""


class Compacted(StoreError):
    """The requested watch revision is older than the oldest retained change."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(
            f"revision {compact_revision} and older were compacted; "
            f"the oldest watchable revision is {compact_revision + 1}"
        )
        self.compact_revision = compact_revision


class LeaseNotFound(StoreError):
    """The lease does not exist (never granted, expired or revoked)."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached. A read may be retried; a write that raised this
    has an unknown outcome (it may have been applied), so check before retrying it."""


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


CompareTarget = Literal["mod_revision", "create_revision", "version", "value"]
CompareOp = Literal["==", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction, evaluated against the key's current state.

    A missing key has ``create_revision == mod_revision == version == 0`` and no value,
    so ``Compare.absent(key)`` is ``create_revision == 0``.
    """

    key: str
    target: CompareTarget
    op: CompareOp
    operand: int | str

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, "create_revision", "==", 0)

    @classmethod
    def unchanged(cls, kv: KV | None, key: str) -> Compare:
        """The key is still as it was when read (absent if ``kv`` is None)."""
        if kv is None:
            return cls.absent(key)
        return cls(key, "mod_revision", "==", kv.mod_revision)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    kv: KV
    """For a delete, ``kv.value`` is empty and ``kv.mod_revision`` is the delete's revision."""
    prev: KV | None = None


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KV] = field(default_factory=list)
    revision: int = 0


class Store(abc.ABC):
    """Desired state of the whole platform. See the module docstring for semantics."""

    @abc.abstractmethod
    async def get(self, key: str) -> KV | None: ...

    @abc.abstractmethod
    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        """All keys starting with ``prefix`` in key order, and the store revision read at."""

    @abc.abstractmethod
    async def put(self, key: str, value: str, *, lease: int = 0) -> int:
        """Write one key; returns the new revision."""

    @abc.abstractmethod
    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete a key (or every key under a prefix); returns the store revision after."""

    @abc.abstractmethod
    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Put | Delete] = (),
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        """If every comparison holds apply ``success``, else ``failure``, atomically."""

    @abc.abstractmethod
    def watch(self, prefix: str, from_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Changes under ``prefix`` from ``from_revision`` on, forever, in revision order
        (and in key order within one revision).

        Raises :class:`Compacted` (when iterated) if ``from_revision`` is no longer
        retained. Cancel the consuming task or ``aclose()`` the iterator to stop.
        """

    @abc.abstractmethod
    async def grant_lease(self, ttl: float) -> int:
        """A new lease id; keys put with it expire ``ttl`` seconds after the last keepalive."""

    @abc.abstractmethod
    async def keepalive(self, lease: int) -> None:
        """Renew a lease for another TTL. Raises :class:`LeaseNotFound` if it is gone."""

    @abc.abstractmethod
    async def revoke_lease(self, lease: int) -> None:
        """End a lease now, deleting its keys. Unknown leases are ignored."""

    @abc.abstractmethod
    async def close(self) -> None: ...
