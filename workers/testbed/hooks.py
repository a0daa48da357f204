"""Running a recipe hook (``deploy``, ``upgrade``, ``resources``) on a testbed.

Hooks are upstream code: they may hang, fork daemons, or print gigabytes. So a hook runs in its
own process group (inside the host's namespace when a host is given), a timeout kills the whole
group, and its output is read as it comes and capped — the head and the tail are kept, the
middle is counted and dropped — so a flood costs neither memory nor disk. The testbed also
tracks the group, so anything the hook left running dies at teardown.

Background processes a hook starts must redirect their own output: once the hook has exited we
stop reading (after a short drain), and a daemon still writing to the hook's pipe gets EPIPE.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from workers.testbed.base import Testbed
from workers.testbed.process import InfraError, kill_group

DEFAULT_MAX_OUTPUT = 64 * 1024
TAIL_LINES = 20
DRAIN_AFTER_EXIT_S = 1.0
KILL_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class HookResult:
    """How a hook ended. ``exit_code`` is negative (minus the signal) when it was killed."""

    exit_code: int
    timed_out: bool
    output_tail: str
    log: str
    duration_s: float


def _decode(data: bytes) -> str:
    """Hook output as text for the run log: invalid UTF-8 and NUL bytes (which PostgreSQL text
    cannot hold, and which would lose the whole run) become U+FFFD."""
    return data.decode("utf-8", errors="replace").replace("\x00", "\N{REPLACEMENT CHARACTER}")


class _CappedOutput:
    """Keeps the first and last ``limit / 2`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data:
            return
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size > self.tail_limit:
            excess = self.tail_size - self.tail_limit
            first = self.tail[0]
            if len(first) <= excess:
                self.tail.popleft()
                self.tail_size -= len(first)
                self.dropped += len(first)
            else:
                self.tail[0] = first[excess:]
                self.tail_size -= excess
                self.dropped += excess

    def text(self) -> str:
        head = _decode(bytes(self.head))
        tail = _decode(b"".join(self.tail))
        if not self.dropped:
            return head + tail
        return (f"{head}\n[... output truncated: {self.dropped} bytes omitted, "
                f"log capped at {self.head_limit + self.tail_limit} bytes ...]\n{tail}")

    def last_lines(self, count: int) -> str:
        source = b"".join(self.tail) if self.tail else bytes(self.head)
        lines = _decode(source).splitlines()
        return "\n".join(lines[-count:])


def _check_executable(executable: Path, cwd: Path) -> None:
    if not executable.is_file():
        raise InfraError(f"hook {executable} does not exist")
    if not os.access(executable, os.X_OK):
        raise InfraError(f"hook {executable} is not executable (chmod +x it in the recipe)")
    if not cwd.is_dir():
        raise InfraError(f"working directory {cwd} for hook {executable.name} does not exist")


def run_hook(testbed: Testbed, executable: Path, args: list[str], *, env: dict[str, str],
             cwd: Path, timeout: float, host: str | None = None,
             max_output: int = DEFAULT_MAX_OUTPUT) -> HookResult:
    """Run ``executable ARGS`` on ``host`` (None: the controller) with the testbed's env.

    The environment is a clean base plus :meth:`Testbed.hook_env` plus ``env``: the worker's
    own secrets never reach upstream code. Raises InfraError only when the hook cannot be
    started at all; a failing or hanging hook is reported in the result.
    """
    executable = executable.absolute()
    _check_executable(executable, cwd)
    full_env = testbed.env_for({**testbed.hook_env(), **env})
    # A remote driver carries env and cwd to the other side; local ones leave them to Popen.
    command = testbed.command_for([str(executable), *args], host, env=full_env, cwd=cwd)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                start_new_session=True)
    except OSError as exc:
        raise InfraError(f"cannot start hook {executable}: {exc.strerror or exc}") from None
    testbed.track(proc)
    output = _CappedOutput(max_output)
    deadline = started + timeout
    timed_out = _pump(proc, output, deadline=deadline)
    if not timed_out:
        # It may have closed its output and carried on running.
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        kill_group(proc, grace_s=KILL_GRACE_S)
    exit_code = proc.wait()
    duration = time.monotonic() - started
    log = output.text()
    if timed_out:
        log += f"\n[hook killed after the {timeout:g} s timeout, with its process group]"
    return HookResult(exit_code=exit_code, timed_out=timed_out,
                      output_tail=output.last_lines(TAIL_LINES), log=log, duration_s=duration)


def _pump(proc: subprocess.Popen[bytes], output: _CappedOutput, *, deadline: float) -> bool:
    """Read the hook's output until EOF (or shortly after it exits); True on timeout."""
    assert proc.stdout is not None  # we asked for a pipe
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return True
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and now - exited_at > DRAIN_AFTER_EXIT_S:
                    return False  # a background child holds the pipe; stop reading
                wait = min(deadline - now, 0.2)
                if selector.select(timeout=wait):
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        return False
                    output.add(data)
        finally:
            proc.stdout.close()
