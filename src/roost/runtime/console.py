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

READ_SIZE = 65536
QUEUED_READS = 64
WRITE_RETRY = 0.01


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


class PtyTerminal:
    """A :class:`Console` read and written as a stream: the ``Terminal`` the API carries
    to clients. Reading pauses while ``QUEUED_READS`` chunks wait, so a slow client
    holds the machine's output back instead of filling memory."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._loop = asyncio.get_running_loop()
        self._output: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUED_READS)
        self._reading = False
        self._read_more()

    async def read(self) -> bytes | None:
        data = await self._output.get()
        if self._output.empty() and data is not None:
            self._read_more()
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.console.master, view) :]
            except BlockingIOError:
                # The pty's input buffer is full until the program reads it.
                await asyncio.sleep(WRITE_RETRY)

    def resize(self, cols: int, rows: int) -> None:
        self.console.resize(cols, rows)

    async def wait(self) -> int:
        return await self.console.wait()

    def close(self) -> None:
        self._pause()
        self.console.close()

    def _read_more(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.add_reader(self.console.master, self._readable)

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.console.master)

    def _readable(self) -> None:
        try:
            data = os.read(self.console.master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: the process and everything on its terminal are gone
        if not data:
            self._pause()
            self._output.put_nowait(None)
            return
        self._output.put_nowait(data)
        if self._output.full():
            self._pause()


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
