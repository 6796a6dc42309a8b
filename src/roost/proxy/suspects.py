"""Passive health of the other hosts: those this proxy could not reach lately.

A host's liveness lease in the store says it is gone only once it runs out (up to its
TTL, 5 s). A host cut off from the network is gone long before that, and meanwhile
every request the balancer sends there waits out a connect timeout. So, as Fly's proxy
marks targets it cannot reach, a failed connect to a host's proxy makes that **host**
(not just the machine: the link is what failed) *suspect* for ``SUSPECT_PERIOD``: the
balancer chooses machines there only when no other can serve.

The suspicion ends early when an exchange with that host's proxy succeeds, or when the
host joins the fleet again under a new epoch (the catalog sees its liveness key put
anew). Expiry is checked lazily on lookup, against an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

SUSPECT_PERIOD = 10.0
"""Longer than the liveness lease's TTL: by the time a host that is really gone could
be tried again, the catalog knows it is down. A host that was only briefly away gets
its traffic back after this at the latest (or at once, should nothing else serve)."""


@dataclass
class Suspects:
    clock: Callable[[], float] = time.monotonic
    period: float = SUSPECT_PERIOD
    _until: dict[str, float] = field(default_factory=dict)

    def suspected(self, host: str) -> bool:
        """Whether ``host`` is suspect now (one dict lookup; the data path asks this)."""
        until = self._until.get(host)
        if until is None:
            return False
        if self.clock() < until:
            return True
        del self._until[host]
        return False

    def mark(self, host: str) -> bool:
        """Suspect ``host`` from now for ``period``; True if it was not suspect before."""
        fresh = not self.suspected(host)
        self._until[host] = self.clock() + self.period
        return fresh

    def clear(self, host: str) -> bool:
        """Trust ``host`` again; True if it was suspect."""
        until = self._until.pop(host, None)
        return until is not None and self.clock() < until
