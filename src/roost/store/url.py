"""Stores by URL: ``sqlite:/path/store.db`` (one host) or ``etcd://h1:2379,h2:2379``."""

from __future__ import annotations

from pathlib import Path

from roost.store.base import Store, StoreError
from roost.store.etcd import EtcdStore
from roost.store.sqlite import SqliteStore


async def open_store(url: str) -> Store:
    """A started store for ``url``; raises StoreError with what is wrong with it."""
    scheme, sep, rest = url.partition(":")
    if not sep or not rest:
        raise StoreError(f"invalid store {url!r}: use sqlite:PATH or etcd://HOST:PORT[,...]")
    if scheme == "sqlite":
        path = Path(rest.removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return await SqliteStore.open(path)
    if scheme in ("etcd", "etcds"):
        hosts = [h for h in rest.removeprefix("//").split(",") if h]
        if not hosts:
            raise StoreError(f"invalid store {url!r}: name at least one etcd member")
        http = "https" if scheme == "etcds" else "http"
        return EtcdStore([f"{http}://{host}" for host in hosts])
    raise StoreError(f"unknown store {scheme!r} in {url!r}: use sqlite: or etcd://")
