"""Per-machine supervisor: keeps one machine's process and records how it ended.

Run as ``python -I -S shim.py`` in its own session, with a notification pipe on fd 3
and a command pipe on fd 4. It outlives the agent that spawned it, so a restarted agent
finds the machine still running (``shim.json``) or its exit status (``exit.json``).

The driver starts a shim *ahead* of the machine it will supervise (a spare): the shim
gets through interpreter start-up, then waits for its command (NUL-separated arguments,
up to EOF) on fd 4; EOF without a command (the agent went away) makes it exit. This takes
~15 ms of Python start-up off every machine start. Commands:

    runc MACHINE_DIR RUNC RUNC_ROOT CONTAINER_ID OOM_FILE
        ``runc run -d`` the bundle ``MACHINE_DIR/bundle``, reap until the container's
        init exits, record it, ``runc delete``. ``OOM_FILE`` is the memory cgroup's
        ``memory.oom_control`` (v1) or ``memory.events`` (v2). One ``run -d`` rather
        than ``create`` + ``start``: a runc exec less, ~8 ms per start.
    exec MACHINE_DIR CWD PATH ARGV...
        Run the executable PATH with ARGV directly (no isolation), in its own process
        group, with the environment in ``MACHINE_DIR/exec.env`` (NUL-separated
        ``KEY=VALUE``; kept out of our own environment so that e.g. ``LD_LIBRARY_PATH``
        cannot break the interpreter); when it exits, kill whatever it left behind.

Answer on fd 3: one line, ``running <pid> <started_at>`` or ``error <text>``, then close.
Once it has its command, the shim's stdout/stderr go to ``MACHINE_DIR/shim.log``.

Stdlib only and as few imports as possible: this runs on every machine start and
interpreter start-up is most of its cost. Hence ``posix`` rather than ``os`` (which
``-S`` leaves unimported; ~3 ms), ``_signal`` rather than ``signal`` (~8 ms: enum),
no ``from __future__`` and hand-written JSON. The driver runs it from a pre-compiled
``.pyc`` (compiling costs ~5 ms) and imports it for the file names and helpers.
"""

import _signal
import posix
import sys
import time

NOTIFY_FD = 3
COMMAND_FD = 4
SHIM_LOG = "shim.log"
STATE_FILE = "shim.json"
EXIT_FILE = "exit.json"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
RUNC_LOG = "runc.log"
PID_FILE = "init.pid"
BUNDLE_DIR = "bundle"
EXEC_ENV = "exec.env"

_PR_SET_CHILD_SUBREAPER = 36
_HANDS_OFF = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks) of a process, None if it is gone.

    The start time tells a process from a later one that reused its pid.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after its last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _set_child_subreaper() -> None:
    # _ctypes instead of ctypes: importing ctypes costs ~10 ms per start, _ctypes ~1 ms.
    import _ctypes

    class _Libc:
        _handle = _ctypes.dlopen(None, posix.RTLD_NOW)

    class _Func(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO

    prctl = _Func(("prctl", _Libc))
    if prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_CHILD_SUBREAPER) failed")


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o644)
    try:
        posix.write(fd, text.encode())
    finally:
        posix.close(fd)
    posix.replace(tmp, path)


def _write_state(mdir: str, init_pid: int | None = None, started_at: float | None = None) -> None:
    me = posix.getpid()
    stat = proc_stat(me)
    assert stat is not None
    init_ticks = None
    if init_pid is not None:
        init_stat = proc_stat(init_pid)
        init_ticks = None if init_stat is None else init_stat[2]
    _write_atomic(
        f"{mdir}/{STATE_FILE}",
        f'{{"pid": {me}, "start_ticks": {stat[2]}, "init_pid": {_js(init_pid)}, '
        f'"init_start_ticks": {_js(init_ticks)}, "started_at": {_js(started_at)}}}\n',
    )


def _js(value: int | float | None) -> str:
    return "null" if value is None else repr(value)


def _notify(text: str) -> None:
    try:
        posix.write(NOTIFY_FD, text.encode() + b"\n")
        posix.close(NOTIFY_FD)
    except OSError:
        pass  # the agent went away while we started; the state file still tells it all


def _spawn(
    argv: list[str],
    console: tuple[int, int],
    env: dict[str, str] | dict[bytes, bytes] = posix.environ,
    path: str | None = None,
    **kw: object,
) -> int:
    """posix_spawn with stdin /dev/null and stdout/stderr to the machine's two logs.

    The signals we ignore would stay ignored across exec (and a shell cannot trap a
    signal ignored on entry), so the child gets them back at their defaults.
    """
    actions = [
        (posix.POSIX_SPAWN_OPEN, 0, "/dev/null", posix.O_RDONLY, 0),
        (posix.POSIX_SPAWN_DUP2, console[0], 1),
        (posix.POSIX_SPAWN_DUP2, console[1], 2),
    ]
    return posix.posix_spawnp(
        path or argv[0], argv, env, file_actions=actions, setsigdef=_HANDS_OFF, **kw
    )


def _wait(pid: int) -> int:
    return posix.waitpid(pid, 0)[1]


def _reap_until(pid: int) -> int:
    """Reap every child (we are a subreaper) until ``pid`` exits; its wait status."""
    while True:
        done, status = posix.waitpid(-1, 0)
        if done == pid:
            return status


def _reap_ready() -> None:
    try:
        while posix.waitpid(-1, posix.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _record_exit(mdir: str, status: int, oom_killed: bool) -> None:
    if posix.WIFSIGNALED(status):
        sig = posix.WTERMSIG(status)
        code, sig_js = 128 + sig, str(sig)
    else:
        code, sig_js = posix.WEXITSTATUS(status), "null"
    _write_atomic(
        f"{mdir}/{EXIT_FILE}",
        f'{{"exit_code": {code}, "signal": {sig_js}, '
        f'"oom_killed": {"true" if oom_killed else "false"}, "exited_at": {time.time()!r}}}\n',
    )


def _oom_kills(path: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except OSError:
        pass
    return 0


def _open_console(mdir: str) -> tuple[int, int]:
    """The machine's stdout and stderr files; the agent tails them into its log store."""
    flags = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC
    return (
        posix.open(f"{mdir}/{STDOUT_LOG}", flags, 0o640),
        posix.open(f"{mdir}/{STDERR_LOG}", flags, 0o640),
    )


def _run_runc(mdir: str, runc: str, root: str, cid: str, oom_file: str) -> int:
    base = [runc, "--root", root, "--log", f"{mdir}/{RUNC_LOG}", "--log-format", "json"]
    console = _open_console(mdir)
    pid_file = f"{mdir}/{PID_FILE}"
    run = [*base, "run", "-d", "--bundle", f"{mdir}/{BUNDLE_DIR}", "--pid-file", pid_file, cid]
    status = _wait(_spawn(run, console))
    if status != 0:
        # Whatever runc left, an init it created included (our child by now), goes.
        _wait(_spawn([*base, "delete", "-f", cid], console))
        _reap_ready()
        _notify(f"error runc run exited with status {posix.waitstatus_to_exitcode(status)}")
        return 1
    with open(pid_file) as f:
        init_pid = int(f.read())
    started_at = time.time()
    _write_state(mdir, init_pid, started_at)
    _notify(f"running {init_pid} {started_at!r}")

    status = _reap_until(init_pid)
    # The counter goes with the cgroup on delete, so read it first.
    _record_exit(mdir, status, _oom_kills(oom_file) > 0)
    if _wait(_spawn([*base, "delete", cid], console)) != 0:
        _wait(_spawn([*base, "delete", "-f", cid], console))
    _reap_ready()
    return 0


def _children() -> list[int]:
    me = posix.getpid()
    kids = []
    for name in posix.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None and stat[1] == me:
                kids.append(int(name))
    return kids


def _kill_leftovers(pgid: int) -> None:
    """Kill what the process left behind, as a pid namespace would when its init exits.

    Its process group first; then, round by round, whatever got re-parented to us
    (daemons that left the group or session) until nothing is left to reap.
    """
    try:  # noqa: SIM105 (importing contextlib would add ~3 ms to every start)
        posix.killpg(pgid, _signal.SIGKILL)
    except ProcessLookupError:
        pass
    while kids := _children():
        for pid in kids:
            try:
                posix.kill(pid, _signal.SIGKILL)
                posix.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                continue


def _read_env(path: str) -> dict[str, str]:
    with open(path, "rb") as f:
        items = f.read().split(b"\0")
    env = {}
    for item in items:
        key, sep, value = item.decode().partition("=")
        if sep:
            env[key] = value
    return env


def _run_exec(mdir: str, cwd: str, path: str, argv: list[str]) -> int:
    console = _open_console(mdir)
    try:
        env = _read_env(f"{mdir}/{EXEC_ENV}")
        posix.chdir(cwd)
        pid = _spawn(argv, console, env, path, setpgroup=0)
    except OSError as e:
        _notify(f"error cannot run {argv[0]}: {e.strerror or e}")
        return 1
    started_at = time.time()
    _write_state(mdir, pid, started_at)
    _notify(f"running {pid} {started_at!r}")
    status = _reap_until(pid)
    _record_exit(mdir, status, False)
    _kill_leftovers(pid)
    return 0


def _await_command() -> list[str] | None:
    chunks = []
    while chunk := posix.read(COMMAND_FD, 65536):
        chunks.append(chunk)
    posix.close(COMMAND_FD)
    if not chunks:
        return None
    return [arg.decode() for arg in b"".join(chunks).split(b"\0")]


def _log_to(path: str) -> None:
    fd = posix.open(path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o640)
    posix.dup2(fd, 1)
    posix.dup2(fd, 2)
    posix.close(fd)


def main() -> int:
    for sig in _HANDS_OFF:
        _signal.signal(sig, _signal.SIG_IGN)
    try:
        # Only we may hold the pipes: a child keeping one open would hide our exit.
        posix.set_inheritable(NOTIFY_FD, False)
        posix.set_inheritable(COMMAND_FD, False)
        _set_child_subreaper()
    except OSError as e:
        _notify(f"error shim setup: {e}")
        return 1
    args = _await_command()
    if args is None:
        return 0
    mode, mdir = args[0], args[1]
    try:
        _log_to(f"{mdir}/{SHIM_LOG}")
        _write_state(mdir)
    except OSError as e:
        _notify(f"error shim setup: {e}")
        return 1
    if mode == "runc":
        return _run_runc(mdir, args[2], args[3], args[4], args[5])
    return _run_exec(mdir, args[2], args[3], args[4:])


if __name__ == "__main__":
    sys.exit(main())
