"""What happens after a machine's main process exits on its own.

Pure decisions, so they are tested without processes or clocks:

* ``no``: stay stopped.
* ``always``: start again, whatever the exit code.
* ``on-failure`` (Fly's default): start again after a non-zero exit, at most
  ``max_retries`` times (default 10) in a row.

Repeated quick crashes back off exponentially; a run that lasted ``STABLE_AFTER``
seconds counts as healthy and resets the count. ``auto_destroy`` destroys a machine
the policy leaves stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roost.spec.config import MachineConfig

DEFAULT_MAX_RETRIES = 10
STABLE_AFTER = 60.0
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class AfterExit:
    action: Literal["restart", "stop", "destroy"]
    delay: float = 0.0
    restart_count: int = 0
    """Restarts in a row, including this one."""


def after_exit(
    config: MachineConfig, exit_code: int, restart_count: int, ran_for: float
) -> AfterExit:
    restart = config.restart
    policy = restart.policy if restart else "on-failure"
    max_retries = (
        restart.max_retries if restart and restart.max_retries is not None else DEFAULT_MAX_RETRIES
    )
    count = 0 if ran_for >= STABLE_AFTER else restart_count
    wants = policy == "always" or (
        policy == "on-failure" and exit_code != 0 and count < max_retries
    )
    if wants:
        return AfterExit("restart", backoff(count), count + 1)
    if config.auto_destroy:
        return AfterExit("destroy", restart_count=count)
    return AfterExit("stop", restart_count=count)


def backoff(previous_restarts: int) -> float:
    if previous_restarts == 0:
        return 0.0
    return min(FIRST_BACKOFF * 2 ** (previous_restarts - 1), MAX_BACKOFF)
