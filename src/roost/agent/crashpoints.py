"""Named points where a chaos test can make the agent die, deterministically.

``ROOST_CRASH_AT=<point>`` in the environment makes the process SIGKILL itself the
first time it reaches ``<point>``, exactly as a crash there would: no cleanup, no
flush, shims and machines left running. The supervisor names a point on each side of
every journal write of a run, ``PLAN:begun``, ``PLAN:STEP`` (the step's effect done,
the journal not yet told), ``PLAN:STEP:journalled`` and ``PLAN:finished`` (the journal
closed, the outcome not yet stored), so ``tests/chaos`` can kill the agent at each one
and check the machine still settles. Unset, a point costs one truth test: the name is
joined from its parts only when a crash is armed.
"""

from __future__ import annotations

import os
import signal

ENV = "ROOST_CRASH_AT"

_armed = os.environ.get(ENV, "")


def reached(*parts: str) -> None:
    if _armed and ":".join(parts) == _armed:
        os.kill(os.getpid(), signal.SIGKILL)
