"""Interactive terminals inside machines: a process on a pseudo-terminal whose master
side we hold.

The command runs on the slave side of a pty we open, as its controlling terminal. For
runc that command is ``runc exec --tty``, which makes a second pty inside the
container and copies between the two; resizing ours sends runc a SIGWINCH, and runc
resizes the inner one to match.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import termios
from dataclasses import dataclass, field

from roost.runtime.base import DriverError


@dataclass
class Console:
    """A process on a pty: read and write ``master``; ``wait()`` for its exit code."""

    master: int
    process: asyncio.subprocess.Process
    _closed: bool = field(default=False)

    def resize(self, cols: int, rows: int) -> None:
        set_size(self.master, cols, rows)

    async def wait(self) -> int:
        code = await self.process.wait()
        return 128 - code if code < 0 else code

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self.master)
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def open_console(
    command: list[str], env: dict[str, str] | None, cwd: str | None, cols: int, rows: int
) -> Console:
    master, slave = pty.openpty()
    # Sized before the command starts, so it (and runc) read the right size at once.
    set_size(master, cols, rows)
    try:
        # setsid(1) makes the command a session leader with the pty (its stdin) as the
        # controlling terminal; a preexec_fn cannot, as uvloop runs it before the dup2s.
        process = await asyncio.create_subprocess_exec(
            "setsid",
            "--ctty",
            *command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
        )
    except OSError as exc:
        os.close(master)
        raise DriverError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return Console(master, process)
