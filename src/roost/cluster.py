"""What the processes of one fleet share: which hosts are alive, and the secret they
show each other.

Agents' endpoints and proxies' backhaul listeners accept calls only with it. It lives in
the store, so anything that can reach the store (and so is part of the fleet) can read
it, and nothing has to be copied between hosts. The first process to need it creates it.
"""

from __future__ import annotations

import hmac
import secrets

from roost.store import Compare, Put, Store
from roost.store.records import ALIVE_PREFIX, CLUSTER_SECRET_KEY

HEADER = "roost-cluster-secret"


async def cluster_secret(store: Store) -> str:
    """The fleet's secret, created on first use (concurrent first uses agree)."""
    while True:
        current = await store.get(CLUSTER_SECRET_KEY)
        if current is not None:
            return current.value
        fresh = secrets.token_urlsafe(32)
        created = await store.txn(
            [Compare.absent(CLUSTER_SECRET_KEY)], [Put(CLUSTER_SECRET_KEY, fresh)]
        )
        if created.succeeded:
            return fresh


def matches(secret: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(secret.encode(), offered.encode())


async def alive_hosts(store: Store) -> dict[str, int]:
    """Hosts whose liveness lease is current, with the epoch each registered under."""
    return {
        kv.key.removeprefix(ALIVE_PREFIX): int(kv.value) if kv.value.isdigit() else 0
        for kv in (await store.range(ALIVE_PREFIX)).kvs
    }
