"""Upstream checkouts: a local mirror per component, and the tree of one commit extracted from it.

Git gets argument lists with ``--`` before anything that came from outside, URLs and shas are
validated before they get here, and extraction checks every archive member itself (the same
rules as tarfile's ``data`` filter, which Debian 12's Python 3.11.2 does not have) so an upstream
tree cannot write outside the run's folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import IO

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
        unpack(proc.stdout, dest)
        _, err = proc.communicate(timeout=GIT_TIMEOUT)
    except (tarfile.TarError, OSError, subprocess.TimeoutExpired) as exc:
        proc.kill()
        proc.wait()
        raise InfraError(f"cannot extract {sha} from {mirror.name}: {exc}") from None
    if proc.returncode != 0:
        raise InfraError(f"git archive {sha} failed: {err.decode(errors='replace')[-500:]}")
    return dest


class UnsafeMember(tarfile.TarError):
    """An archive member that would land outside the destination, or is not plain data."""


def _inside(root: Path, path: Path) -> Path:
    """``path`` resolved (symlinks already extracted included); refused unless under ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root):
        raise UnsafeMember(f"{str(path)!r} resolves outside the tree")
    return real


def _member_target(root: Path, member: tarfile.TarInfo) -> Path:
    parts = member.name.split("/")
    if member.name.startswith("/") or ".." in parts:
        raise UnsafeMember(f"member {member.name!r}: absolute, or climbs with '..'")
    parent = _inside(root, root.joinpath(*parts[:-1]))
    return parent / parts[-1] if parts[-1] else parent


def _link_allowed(root: Path, target: Path, member: tarfile.TarInfo) -> None:
    link = member.linkname
    if not link or link.startswith("/"):
        raise UnsafeMember(f"link {member.name!r} -> {link!r}: absolute")
    _inside(root, (target.parent if member.issym() else root) / link)


def unpack(stream: IO[bytes], dest: Path) -> None:
    """Extract the tar ``stream`` into ``dest`` as plain data, refusing anything else.

    The rules of tarfile's ``data`` filter, written out so they hold on every Python 3.11
    (``filter=`` arrived in 3.11.4): no absolute names and no ``..``, nothing written through a
    symlink that leaves the tree, links only to places inside it, no devices or fifos, files
    owned by whoever extracts (never chown to the archive's ids) with no setuid, setgid or
    group/other write bits. A refused member raises ``UnsafeMember`` and stops the extraction.
    Links are checked as they come and once more at the end, since a later link can change where
    an earlier one leads.
    """
    root = dest.resolve()
    links: list[Path] = []
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            target = _member_target(root, member)
            if member.isdir():
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
            elif member.isreg():
                source = archive.extractfile(member)
                assert source is not None  # a regular member always has data
                mode = 0o755 if member.mode & 0o100 else 0o644
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out)
                    os.fchmod(out.fileno(), mode)  # the umask must not narrow what hooks need
                os.utime(target, (member.mtime, member.mtime))
            elif member.issym():
                _link_allowed(root, target, member)
                target.symlink_to(member.linkname)
                links.append(target)
            elif member.islnk():
                _link_allowed(root, target, member)
                target.hardlink_to(_inside(root, root / member.linkname))
            else:
                raise UnsafeMember(f"member {member.name!r}: not a file, folder or link")
    for link in links:
        _inside(root, link)


def checkout(repos_dir: Path, name: str, url: str, sha: str, dest: Path) -> Path:
    return extract(ensure_commit(repos_dir, name, url, sha), sha, dest)
