"""Runtime drivers: how a machine's process is laid out, started, observed and removed."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from roost.runtime import seccomp
from roost.runtime.base import (
    Capabilities,
    Driver,
    DriverError,
    ExitStatus,
    Inspection,
    LaunchSpec,
    MachineNotPrepared,
    Mount,
    ProcessSpec,
    Resources,
)
from roost.runtime.process import ProcessDriver
from roost.runtime.runc import RuncDriver
from roost.runtime.supervised import set_child_subreaper

__all__ = [
    "Capabilities",
    "Driver",
    "DriverError",
    "ExitStatus",
    "Inspection",
    "LaunchSpec",
    "MachineNotPrepared",
    "Mount",
    "ProcessDriver",
    "ProcessSpec",
    "Resources",
    "RuncDriver",
    "select_driver",
    "set_child_subreaper",
]

log = logging.getLogger(__name__)


def select_driver(
    state_dir: Path,
    *,
    prefer: str | None = None,
    runc_root: Path,
    cgroup_parent: str,
    runc: str = "runc",
) -> Driver:
    """runc when we are root and it is installed, else the process driver (with a warning).

    ``prefer`` forces one: ``"runc"`` (an error if unusable) or ``"process"``.
    """
    if prefer not in (None, "runc", "process"):
        raise DriverError(f"unknown runtime driver {prefer!r} (expected runc or process)")
    if prefer == "process":
        return ProcessDriver(state_dir)
    problem = None
    if os.geteuid() != 0:
        problem = "it needs root"
    elif shutil.which(runc) is None:
        problem = f"{runc} is not installed"
    elif not seccomp.PROFILE_PATH.exists():
        problem = f"its seccomp profile is missing ({seccomp.PROFILE_PATH})"
    if problem is None:
        return RuncDriver(state_dir, runc_root=runc_root, cgroup_parent=cgroup_parent, runc=runc)
    if prefer == "runc":
        raise DriverError(f"the runc driver is unusable: {problem}")
    log.warning(
        "using the process driver: machines run WITHOUT isolation or resource limits "
        "(runc unusable: %s)",
        problem,
    )
    return ProcessDriver(state_dir)
