"""The desired-state store: the contract and its embedded SQLite backend."""

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
from roost.store.sqlite import SqliteStore

__all__ = [
    "KV",
    "Compacted",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Delete",
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
