"""The desired-state store: the contract, its embedded SQLite backend and its etcd backend."""

from roost.store.base import (
    KV,
    Compacted,
    Compare,
    CompareOp,
    CompareTarget,
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
from roost.store.etcd import EtcdStore
from roost.store.sqlite import SqliteStore

__all__ = [
    "KV",
    "Compacted",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Delete",
    "EtcdStore",
    "LeaseNotFound",
    "Put",
    "RangeResult",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TxnResult",
    "WatchEvent",
]
