"""Signal names and numbers as the API accepts them (``"SIGTERM"``, ``"TERM"``, ``15``)."""

from __future__ import annotations

import signal

# The spec's enum for /signal; stop_config allows a subset.
SIGNAL_NAMES = (
    "SIGABRT", "SIGALRM", "SIGFPE", "SIGHUP", "SIGILL", "SIGINT", "SIGKILL", "SIGPIPE",
    "SIGQUIT", "SIGSEGV", "SIGTERM", "SIGTRAP", "SIGUSR1", "SIGUSR2",
)  # fmt: skip
STOP_SIGNAL_NAMES = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGTERM")


def parse_signal(value: str | int, allowed: tuple[str, ...] = SIGNAL_NAMES) -> int:
    """The signal number for a name (with or without ``SIG``) or a number."""
    if isinstance(value, bool):
        raise ValueError("a signal cannot be a boolean")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        try:
            name = signal.Signals(number).name
        except ValueError:
            raise ValueError(f"unknown signal number {number}") from None
        if name not in allowed:
            raise ValueError(f"signal {number} ({name}) is not allowed here")
        return number
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in allowed:
        raise ValueError(f"unknown signal {value!r}; use one of {', '.join(allowed)}")
    return int(signal.Signals[name])


def signal_name(number: int) -> str:
    return signal.Signals(number).name
