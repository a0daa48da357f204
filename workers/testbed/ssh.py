"""The ``ssh`` driver: hosts are real lab machines, reached with the OpenSSH client.

The ``ssh`` binary, not a Python SSH library: it honours the operator's usual setup (agents,
jump hosts, host-key policy), needs no new dependency, and every call still goes through
:func:`workers.testbed.process.execute` with a timeout. Each call is ``ssh -F /dev/null -o
BatchMode=yes -i KEY … HOST 'cd DIR && exec env K=V … tool args'`` — the remote side always runs a
shell, so every word is quoted with :func:`shlex.quote`, and environment variable names are
checked. One master connection per host (``ControlMaster``) keeps a command's overhead at a few
milliseconds instead of a handshake.

Cleanup over SSH: remote processes carry the testbed's cookie in their environment like local
ones, everything the testbed makes on a host lives in one folder ``<remote_dir>/cf-<tag>`` (the
scratch filesystem too), and the record lists each host's ssh command and folder, so teardown —
or the janitor after a SIGKILL — runs one cleanup script per host: kill the cookie's processes,
unmount and detach scratch filesystems, delete the folder. Local ssh clients are marked
``CERTIFIER_SSH_CLIENT=1`` so that the script never kills the connection it runs over (which
matters when the "remote" hosts share this machine's ``/proc``, as in the tests).

Recipe hooks run on a host see the same path names as on the controller: the driver does not
copy checkouts, so a lab must provide them (a shared mount) or run hooks on the controller.
"""

from __future__ import annotations

import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from workers.testbed import records
from workers.testbed.base import Host, Testbed, TestbedError, TestbedSpec
from workers.testbed.process import CommandResult, InfraError, base_env, execute, kill_group

if TYPE_CHECKING:
    from certifier.settings import SshConfig, SshHostConfig

CLIENT_VAR = "CERTIFIER_SSH_CLIENT"
SPAWN_VAR = "CERTIFIER_SPAWN"
LOCAL_ONLY = {"PATH", "HOME", "TMPDIR", CLIENT_VAR}
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
SSH_FAILURES = ("ssh:", "Permission denied", "Host key verification failed",
                "Connection refused", "Connection timed out", "Connection closed",
                "No route to host", "kex_exchange_identification", "REMOTE HOST IDENTIFICATION")
SETUP_TIMEOUT = 30.0
CLEANUP_TIMEOUT = 60.0

# Kill processes carrying "$1" (VAR=value) in their environment, except ssh clients of ours.
# One grep over every environ file (NUL-separated entries: -z) instead of a loop of forks.
KILL_SCRIPT = r"""
for f in $(grep -lzxF -- "$1" /proc/[0-9]*/environ 2>/dev/null); do
  grep -qzxF CERTIFIER_SSH_CLIENT=1 "$f" 2>/dev/null && continue
  pid=${f#/proc/}; pid=${pid%/environ}
  [ "$pid" = "$$" ] || kill -9 "$pid" 2>/dev/null
done
exit 0
"""

# Everything a testbed left on a host: processes (by cookie), scratch filesystems, the folder.
CLEANUP_SCRIPT = r"""
cookie="$1"; folder="$2"
case "$folder" in
  /*/cf-[a-z0-9]*) ;;
  *) echo "refusing to clean $folder: not a testbed folder" >&2; exit 2 ;;
esac
for f in $(grep -lzxF -- "CERTIFIER_TESTBED_COOKIE=$cookie" /proc/[0-9]*/environ 2>/dev/null); do
  grep -qzxF CERTIFIER_SSH_CLIENT=1 "$f" 2>/dev/null && continue
  pid=${f#/proc/}; pid=${pid%/environ}
  [ "$pid" = "$$" ] || kill -9 "$pid" 2>/dev/null
done
if [ -d "$folder" ]; then
  for img in "$folder"/cf-scratch-*.img; do
    [ -e "$img" ] || continue
    mnt=${img%.img}
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    for dev in $(losetup -j "$img" 2>/dev/null | cut -d: -f1); do losetup -d "$dev"; done
  done
  rm -rf -- "$folder"
fi
echo cleaned
"""


def control_dir(tag: str) -> Path:
    """Where the master connections' sockets live; unix socket paths are short (108 bytes),
    so not in the state folder."""
    return Path(tempfile.gettempdir()) / f"cf-ssh-{tag}"


def remote_command(argv: list[str], env: dict[str, str] | None = None,
                   cwd: str | None = None) -> str:
    """The shell command line that runs ``argv`` remotely with ``env`` in ``cwd``."""
    words = [shlex.quote(a) for a in argv]
    assigns = []
    for key, value in sorted((env or {}).items()):
        if key in LOCAL_ONLY:
            continue
        if not ENV_NAME_RE.match(key):
            raise ValueError(f"not an environment variable name: {key!r}")
        assigns.append(f"{key}={shlex.quote(value)}")
    line = "exec " + (f"env {' '.join(assigns)} " if assigns else "") + " ".join(words)
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


def ssh_argv(config: SshConfig, host: SshHostConfig, control: Path | None) -> list[str]:
    """The ssh command prefix that reaches ``host`` (the remote command follows it)."""
    timeout = max(1, round(config.connect_timeout_s))
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-i", str(config.key), "-o", f"ConnectTimeout={timeout}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
            "-o", "StrictHostKeyChecking=" + ("accept-new" if config.accept_new_host_keys
                                              else "yes"),
            "-o", "LogLevel=ERROR"]
    if config.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={config.known_hosts}"]
    if control is not None:
        argv += ["-o", f"ControlPath={control}", "-o", "ControlMaster=no"]
    if config.proxy_jump:
        argv += ["-J", config.proxy_jump]
    argv += ["-p", str(host.port or config.port), "-l", host.user or config.user,
             host.connect or host.address]
    return argv


class SshTestbed(Testbed):
    """Hosts are lab machines; ``run(host=…)`` goes over SSH, ``host=None`` stays here."""

    driver = "ssh"

    def __init__(self, spec: TestbedSpec, *, tag: str, state_dir: Path,
                 records_dir: Path) -> None:
        if spec.ssh is None:
            raise TestbedError("the ssh driver needs an ssh section")
        self.config: SshConfig = spec.ssh
        self.control_dir = control_dir(tag)
        self._spawned: dict[int, tuple[str, str]] = {}
        super().__init__(spec, tag=tag, state_dir=state_dir, records_dir=records_dir)

    def _make_hosts(self) -> tuple[Host, ...]:
        return tuple(Host(h.name, h.address, None) for h in self.config.hosts)

    def _host_config(self, host: str) -> SshHostConfig:
        self.host(host)
        return next(h for h in self.config.hosts if h.name == host)

    @property
    def folder(self) -> PurePosixPath:
        return PurePosixPath(self.config.remote_dir) / f"cf-{self.tag}"

    @property
    def storage_host(self) -> str | None:
        return self.hosts[0].name

    def interface_of(self, host: str) -> str:
        return self._host_config(host).iface

    def _remote(self, host: str) -> records.RemoteHost:
        return records.RemoteHost(host, tuple(self._ssh(host)), str(self.folder))

    def _reached(self) -> tuple[records.RemoteHost, ...]:
        """The hosts where the testbed may have made something (they are in the record)."""
        return self._record.remote if self._record is not None else ()

    def _ssh(self, host: str, *, control: bool = True) -> list[str]:
        return ssh_argv(self.config, self._host_config(host),
                        self.control_dir / host if control else None)

    def workdir(self, host: str | None) -> PurePosixPath:
        return super().workdir(host) if host is None else self.folder

    # -- commands -----------------------------------------------------------------------

    def _local_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        return self.env_for({**(env or {}), CLIENT_VAR: "1"})

    def command_for(self, argv: list[str], host: str | None, *,
                    env: dict[str, str] | None = None, cwd: Path | None = None) -> list[str]:
        if host is None:
            return super().command_for(argv, host, env=env, cwd=cwd)
        if not argv:
            raise ValueError("empty command")
        remote_env = env if env is not None else self.env_for()
        return [*self._ssh(host), remote_command(argv, remote_env,
                                                 str(cwd) if cwd is not None else None)]

    def _check(self, host: str, argv: list[str], done: CommandResult) -> CommandResult:
        if done.returncode == 255 and any(m in done.stderr for m in SSH_FAILURES):
            raise InfraError(f"ssh to {host} failed running {argv[0]}: "
                             f"{done.stderr.strip()[:300]}", done)
        if done.returncode == 127 and ("not found" in done.stderr
                                       or "No such file or directory" in done.stderr):
            raise InfraError(f"{argv[0]} is not installed or not on PATH on {host}", done)
        return done

    def run(self, argv: list[str], *, host: str | None = None, timeout: float,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> CommandResult:
        if host is None:
            return super().run(argv, host=None, timeout=timeout, env=env, cwd=cwd)
        command = self.command_for(argv, host, env=self.env_for(env), cwd=cwd)
        done = execute(command, timeout=timeout, env=self._local_env(env), display=argv,
                       local_tool=False)
        return self._check(host, argv, done)

    def _plain(self, host: str, argv: list[str], timeout: float, *,
               control: bool = True) -> CommandResult:
        """Run without our cookie on the remote side (cleanup scripts must not kill
        themselves)."""
        command = [*self._ssh(host, control=control),
                   remote_command(argv, {"LC_ALL": "C"})]
        return self._check(host, argv, execute(command, timeout=timeout,
                                               env=self._local_env(), display=argv,
                                               local_tool=False))

    def spawn(self, argv: list[str], *, host: str | None = None,
              log_path: Path) -> subprocess.Popen[bytes]:
        if host is None:
            return super().spawn(argv, host=None, log_path=log_path)
        marker = secrets.token_hex(6)
        env = self.env_for({SPAWN_VAR: marker})
        command = self.command_for(argv, host, env=env)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            try:
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT,
                                        env=self._local_env({SPAWN_VAR: marker}),
                                        start_new_session=True)
            except OSError as exc:
                raise InfraError(f"cannot start ssh for {argv[0]}: {exc.strerror or exc}"
                                 ) from None
        self.track(proc)
        self._spawned[proc.pid] = (host, marker)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill the local ssh client and, on the remote host, what it started."""
        kill_group(proc)
        spawned = self._spawned.pop(proc.pid, None)
        if spawned is not None:
            host, marker = spawned
            self._plain(host, ["sh", "-c", KILL_SCRIPT, "sh", f"{SPAWN_VAR}={marker}"],
                        timeout=CLEANUP_TIMEOUT)

    def read_text(self, path: PurePosixPath, host: str | None = None) -> str | None:
        if host is None:
            return super().read_text(path)
        done = self.run(["cat", str(path)], host=host, timeout=30)
        if done.ok:
            return done.stdout
        if "No such file" in done.stderr:
            return None
        raise InfraError(f"cannot read {path} on {host}: {done.stderr.strip()[:200]}", done)

    def _can_mount(self, host: str | None) -> bool:
        if host is None:
            return super()._can_mount(host)
        return (self._host_config(host).user or self.config.user) == "root"

    # -- lifecycle ----------------------------------------------------------------------

    def _build(self) -> None:
        self.control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for h in self.config.hosts:
            # A master connection per host, in the background, carrying our cookie (so
            # teardown and the janitor kill it); it also proves the host is reachable.
            master = [*ssh_argv(self.config, h, None)[:-1], "-o",
                      f"ControlPath={self.control_dir / h.name}", "-o", "ControlMaster=yes",
                      "-o", "ControlPersist=yes", "-f", "-N", h.connect or h.address]
            self._start_master(h.name, master)
            self._add_remote_to_record(self._remote(h.name))
            made = self._plain(h.name, ["mkdir", "-p", str(self.folder)], SETUP_TIMEOUT)
            if not made.ok:
                raise InfraError(f"cannot make {self.folder} on {h.name}: "
                                 f"{made.stderr.strip()[:300]}", made)

    def _start_master(self, host: str, master: list[str]) -> None:
        """Start the master and wait for it to go to the background (``-f``).

        Its output goes to a file, not a pipe: the backgrounded master keeps its output open,
        and a pipe would never reach end-of-file.
        """
        log_path = self.state_dir / "ssh" / f"master-{host}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as out:
            try:
                proc = subprocess.Popen(master, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=self._local_env(),
                                        start_new_session=True)
            except OSError as exc:
                raise InfraError(f"cannot start ssh: {exc.strerror or exc}") from None
        try:
            code = proc.wait(timeout=SETUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            code = -9
        if code != 0:
            said = log_path.read_text(errors="replace").strip()[:300]
            raise InfraError(f"cannot reach {host} over ssh ({master[-1]}): "
                             f"{said or f'exit {code}'}")

    def teardown(self) -> None:
        if self._built and not self._torn_down:
            for proc in self._procs:
                if proc.pid not in self._spawned:
                    continue
                kill_group(proc)
            self._release_scratch()
            for remote in self._reached():
                cleanup_remote(remote, self.cookie)
        super().teardown()

    def _destroy(self) -> None:
        shutil.rmtree(self.control_dir, ignore_errors=True)

    @classmethod
    def reap(cls, record: records.Record) -> list[str]:
        """The common leftovers, then each remote host's folder and processes, and the local
        ssh control folder."""
        removed = super().reap(record)
        for remote in record.remote:
            removed.append(cleanup_remote(remote, record.cookie))
        control = control_dir(record.tag)
        if control.is_dir():
            shutil.rmtree(control, ignore_errors=True)
            removed.append(f"folder {control}")
        return removed


def cleanup_remote(remote: records.RemoteHost, cookie: str) -> str:
    """Run the cleanup script on one remote host; raises InfraError when it cannot."""
    if not remote.ssh or remote.ssh[0] != "ssh":
        raise InfraError(f"record for {remote.host} holds no ssh command")
    command = [*remote.ssh, remote_command(["sh", "-c", CLEANUP_SCRIPT, "sh", cookie,
                                            remote.folder], {"LC_ALL": "C"})]
    done = execute(command, timeout=CLEANUP_TIMEOUT, env=base_env({CLIENT_VAR: "1"}))
    if not done.ok or "cleaned" not in done.stdout:
        raise InfraError(f"cleanup on {remote.host} failed: "
                         f"{(done.stderr or done.stdout).strip()[:300]}", done)
    return f"remote {remote.host}:{remote.folder}"

