"""Upstream checkouts: a local mirror per component, and the tree of one commit extracted from it.

Git gets argument lists with ``--`` before anything that came from outside, URLs and shas are
validated before they get here, and extraction uses tarfile's ``data`` filter so an upstream tree
cannot write outside the run's folder.
"""

from __future__ import annotations

import fcntl
import subprocess
import tarfile
from pathlib import Path

from certifier.domain.combination import NAME_RE, SHA_RE
from workers.testbed.base import InfraError

GIT_TIMEOUT = 300.0
# No user or system config (an /etc/gitconfig could allow ``ext::``, which runs a command) and no
# prompts; ``ext::`` URLs are refused by the config validation as well.
SAFE_GIT = ("-c", "protocol.ext.allow=never")
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
           "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


def _git(args: list[str], *, timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *SAFE_GIT, *args], capture_output=True, text=True,
                              timeout=timeout, check=False, env=GIT_ENV)
    except FileNotFoundError:
        raise InfraError("git is not installed (apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise InfraError(f"git {args[0]} timed out after {timeout:.0f} s") from None


def _has_commit(mirror: Path, sha: str) -> bool:
    probe = _git(["--git-dir", str(mirror), "cat-file", "-e", f"{sha}^{{commit}}"])
    return probe.returncode == 0


def ensure_commit(repos_dir: Path, name: str, url: str, sha: str) -> Path:
    """A bare mirror of ``url`` that contains ``sha``; fetches only when the commit is missing."""
    if not NAME_RE.match(name) or not SHA_RE.match(sha):
        raise InfraError(f"refusing unsafe component name or sha: {name!r} {sha!r}")
    repos_dir.mkdir(parents=True, exist_ok=True)
    mirror = repos_dir / f"{name}.git"
    with (repos_dir / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (mirror / "HEAD").exists():
            done = _git(["clone", "--mirror", "--quiet", "--", url, str(mirror)])
            if done.returncode != 0:
                raise InfraError(f"cannot clone {url}: {done.stderr.strip()[-500:]}")
        if not _has_commit(mirror, sha):
            done = _git(["--git-dir", str(mirror), "fetch", "--quiet", "--prune", "origin"])
            if done.returncode != 0:
                raise InfraError(f"cannot fetch {url}: {done.stderr.strip()[-500:]}")
        if not _has_commit(mirror, sha):
            raise InfraError(f"commit {sha} of {name} is not in {url}")
    return mirror


def extract(mirror: Path, sha: str, dest: Path) -> Path:
    """Write the tree of ``sha`` into ``dest`` (created) and return it."""
    if not SHA_RE.match(sha):  # ``git archive --output=…`` must never be spelt by a caller
        raise InfraError(f"refusing unsafe sha: {sha!r}")
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["git", *SAFE_GIT, "--git-dir", str(mirror), "archive",
                             "--format=tar", sha],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=GIT_ENV)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            archive.extractall(dest, filter="data")
        _, err = proc.communicate(timeout=GIT_TIMEOUT)
    except (tarfile.TarError, subprocess.TimeoutExpired) as exc:
        proc.kill()
        proc.wait()
        raise InfraError(f"cannot extract {sha} from {mirror.name}: {exc}") from None
    if proc.returncode != 0:
        raise InfraError(f"git archive {sha} failed: {err.decode(errors='replace')[-500:]}")
    return dest


def checkout(repos_dir: Path, name: str, url: str, sha: str, dest: Path) -> Path:
    return extract(ensure_commit(repos_dir, name, url, sha), sha, dest)
