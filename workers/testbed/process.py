"""Running and killing external processes: the one place that calls ``subprocess``.

Every tool the testbed uses goes through :func:`execute` so that the same rules hold everywhere:
an argument list (never a shell), a timeout, a new session so a timeout can kill the whole process
group (grandchildren holding our pipes would otherwise hang ``communicate`` forever), a small and
predictable environment with ``LC_ALL=C`` (tool output is parsed, so no localised decimals), and a
readable :class:`InfraError` naming the binary when it is missing.

Processes we start carry an environment *cookie* (``CERTIFIER_TESTBED_COOKIE``). It survives
``fork``/``exec`` and pid reuse cannot fake it, so teardown and the janitor can find every process a
testbed started, even after its owner was SIGKILLed, without ever killing a stranger — the same
trick as Jenkins' ProcessTreeKiller.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

COOKIE_VAR = "CERTIFIER_TESTBED_COOKIE"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

INSTALL_HINTS = {
    "ip": "apt-get install iproute2",
    "ss": "apt-get install iproute2",
    "tc": "apt-get install iproute2",
    "ping": "apt-get install iputils-ping",
    "iperf3": "apt-get install iperf3",
    "fio": "apt-get install fio",
    "ssh": "apt-get install openssh-client",
    "sshd": "apt-get install openssh-server",
    "bridge": "apt-get install iproute2",
    "mkfs.ext4": "apt-get install e2fsprogs",
    "losetup": "apt-get install mount",
}


class InfraError(Exception):
    """The testbed or a tool failed, not the candidate: such a run is retried, never blamed.

    ``result`` holds what the command printed before it failed (e.g. before a timeout), when
    there is something to show.
    """

    def __init__(self, message: str, result: CommandResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What one finished command did; ``timed_out`` is only ever set on an InfraError's result."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """stdout and stderr together, for messages and logs."""
        return self.stdout + self.stderr


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment: the worker's secrets (database URL, tokens) never reach a tool."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": os.environ.get("HOME", "/root"),
        "LC_ALL": "C",
        "LANG": "C",
    }
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    if extra:
        env.update(extra)
    return env


def require_binary(name: str, env: Mapping[str, str] | None = None) -> str:
    """Resolve ``name`` on PATH or raise an InfraError that says how to install it.

    Checked up front because inside ``ip netns exec`` a missing tool only shows as exit 255
    with a message from ``ip``, which would be mistaken for the tool's own failure.
    """
    path = (env or {}).get("PATH") or os.environ.get("PATH") or DEFAULT_PATH
    found = shutil.which(name, path=path)
    if found is None:
        hint = INSTALL_HINTS.get(Path(name).name)
        raise InfraError(f"{name} is not installed or not on PATH"
                         + (f" ({hint})" if hint else ""))
    return found


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], *,
               grace_s: float = 0.0) -> None:
    """Kill ``proc``'s whole process group (it was started in its own session) and reap it.

    Only while ``proc`` is unreaped: until then its pid, and so its group id, cannot have been
    given to anyone else. Leftovers of an already reaped leader are found by cookie instead.
    """
    if proc.poll() is not None:
        return
    if grace_s > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    # Even when the leader has exited (a zombie until we reap it), its group may live on.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def execute(argv: list[str], *, timeout: float, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, display: list[str] | None = None,
            local_tool: bool = True) -> CommandResult:
    """Run ``argv`` to completion; raises InfraError on a missing binary or a timeout.

    ``display`` is the command as the caller thinks of it (without an ``ip netns exec`` or
    ``ssh`` prefix), so messages name the tool the caller ran; ``local_tool=False`` when that
    tool runs on another machine, where this one's PATH says nothing.
    """
    shown = display or argv
    full_env = dict(env) if env is not None else base_env()
    require_binary(argv[0], full_env)
    if shown is not argv and local_tool:
        require_binary(shown[0], full_env)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=full_env, cwd=cwd,
                                start_new_session=True)
    except OSError as exc:
        raise InfraError(f"cannot start {shown[0]}: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = _drain(proc)
        partial = CommandResult(tuple(shown), proc.returncode if proc.returncode else -9,
                                _text(out), _text(err), True, time.monotonic() - started)
        raise InfraError(f"{shown[0]} timed out after {timeout:g} s: {' '.join(shown)}",
                         partial) from None
    return CommandResult(tuple(shown), proc.returncode, _text(out), _text(err), False,
                         time.monotonic() - started)


def _drain(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Collect what a killed process left in its pipes, without waiting on escaped children."""
    try:
        return proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return b"", b""


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when it does not exist.

    Together with the pid this identifies a process across pid reuse.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields restart after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19])


def pid_alive(pid: int, ticks: int | None = None) -> bool:
    """Is ``pid`` running (and, when ``ticks`` is given, still the same process)?"""
    current = start_ticks(pid)
    if current is None:
        return False
    if ticks is not None and current != ticks:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2:state.rfind(")") + 3] != "Z"


def pids_with_cookie(cookie: str) -> list[int]:
    """Every live process whose environment carries ``CERTIFIER_TESTBED_COOKIE=cookie``."""
    needle = f"{COOKIE_VAR}={cookie}".encode()
    found: list[int] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_pids(pids: Iterable[int], *, wait_s: float = 5.0) -> list[int]:
    """SIGKILL ``pids`` and wait until they are gone; returns the pids that were signalled."""
    killed: list[int] = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(pid)
    deadline = time.monotonic() + wait_s
    pending = set(killed)
    while pending and time.monotonic() < deadline:
        pending = {pid for pid in pending if pid_alive(pid)}
        if pending:
            time.sleep(0.02)
    return killed
