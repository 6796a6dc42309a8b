"""API tokens: random secrets, stored only as SHA-256 digests.

Clients send ``Authorization: Bearer <token>`` or, as fly-go does for macaroons,
``Authorization: FlyV1 <token>[,<token>...]``; any listed token that verifies is
enough. Tokens given to the server in its environment (``ROOST_API_TOKEN``) are
accepted too, without being written to the store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable

from roost.api.errors import Unauthorized
from roost.api.machines import Caller
from roost.api.views import rfc3339
from roost.spec import ids
from roost.store import Store
from roost.store.records import TokenRecord, token_key

TOKEN_PREFIX = "roost_"
CACHE_SECONDS = 5.0
_HINT = "send 'Authorization: Bearer <token>'; `roost server` prints the admin token on first start"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def candidate_tokens(header: str | None) -> list[str]:
    if not header:
        return []
    scheme, _, rest = header.strip().partition(" ")
    rest = rest.strip()
    if not rest:
        return []
    if scheme.lower() == "bearer":
        return [rest]
    if scheme.lower() == "flyv1":
        parts = [p.strip() for p in rest.split(",") if p.strip()]
        return [rest, *parts] if len(parts) > 1 else parts
    return []


class Authenticator:
    def __init__(
        self,
        store: Store,
        *,
        static_tokens: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._static = [token_digest(t) for t in static_tokens if t]
        self._clock = clock
        self._cache: dict[str, tuple[Caller, float]] = {}

    async def authenticate(self, header: str | None) -> Caller:
        tokens = candidate_tokens(header)
        if not tokens:
            raise Unauthorized(f"Authenticate: missing or malformed token; {_HINT}")
        for token in tokens:
            caller = await self._verify(token_digest(token))
            if caller is not None:
                return caller
        raise Unauthorized(f"Authenticate: token validation error; {_HINT}")

    async def _verify(self, digest: str) -> Caller | None:
        now = self._clock()
        cached = self._cache.get(digest)
        if cached and cached[1] > now:
            return cached[0]
        if any(hmac.compare_digest(digest, s) for s in self._static):
            caller = Caller(token_id="env", name="admin")
        else:
            kv = await self._store.get(token_key(digest))
            if kv is None:
                return None
            record = TokenRecord.from_json(kv.value)
            caller = Caller(token_id=record.id, name=record.name)
        self._cache[digest] = (caller, now + CACHE_SECONDS)
        return caller

    async def create_token(self, name: str) -> str:
        """A new admin token; the secret is returned once and only its digest is kept."""
        token = new_token()
        record = TokenRecord(id=ids.ulid(), name=name, created_at=rfc3339(time.time()))
        await self._store.put(token_key(token_digest(token)), record.to_json())
        return token
