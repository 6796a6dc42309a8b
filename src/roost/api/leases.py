"""Machine leases: an exclusive, expiring right to mutate one machine.

While a live lease exists, mutating calls must carry its nonce in the
``fly-machine-lease-nonce`` header or fail with 409. Expired leases count as absent
(they are overwritten on the next acquire), so no reaper is needed.
"""

from __future__ import annotations

from roost.api.errors import LeaseHeld
from roost.api.views import rfc3339
from roost.store import KV
from roost.store.records import LeaseRecord

DEFAULT_TTL = 30
NONCE_HEADER = "fly-machine-lease-nonce"


def live_lease(kv: KV | None, now: float) -> LeaseRecord | None:
    if kv is None:
        return None
    lease = LeaseRecord.from_json(kv.value)
    return lease if lease.expires_at > now else None


def check_nonce(machine_id: str, lease: LeaseRecord | None, nonce: str | None) -> None:
    """Raise 409 unless the caller holds the live lease (or there is none)."""
    if lease is None or nonce == lease.nonce:
        return
    raise LeaseHeld(
        f"aborted: machine ID {machine_id} lease currently held by {lease.owner}, "
        f"expires at {rfc3339(lease.expires_at)}; pass its nonce in the "
        f"{NONCE_HEADER} header or wait for it to expire"
    )
