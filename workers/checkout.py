"""Upstream checkouts: a local mirror per component, and the tree of one commit extracted from it.

Git gets argument lists with ``--`` before anything that came from outside, URLs and shas are
validated before they get here, and extraction checks every archive member itself (the same
rules as tarfile's ``data`` filter, which Debian 12's Python 3.11.2 does not have) so an upstream
tree cannot write outside the run's folder.

Nothing a run used is ever lost to upstream: every commit checked out is pinned in the mirror
(``refs/certifier/keep/<sha>``, which a fetch never prunes and ``git gc`` keeps), and a commit
that neither the mirror nor upstream has any more is taken from the archive of known-good
sources (``workers/archive.py``: one ``git bundle`` per component commit), so a worker with an
empty mirror still deploys a known-good whose commit was force-pushed away and collected.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from enum import StrEnum
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


KEEP_PREFIX = "refs/certifier/keep/"


class Origin(StrEnum):
    """Where a checked-out commit came from."""

    MIRROR = "mirror"  # already in this worker's mirror
    UPSTREAM = "upstream"  # fetched from the component's URL
    ARCHIVE = "archive"  # from the known-good archive: upstream no longer has it


@dataclass(frozen=True, slots=True)
class Found:
    """A mirror holding the commit, and how it got there. ``upstream_lacks``: upstream answered
    and does not have the commit (not merely unreachable): it is gone upstream."""

    mirror: Path
    origin: Origin
    upstream_lacks: bool = False
    note: str = ""


def bundle_path(archive_dir: Path, name: str, sha: str) -> Path:
    """The archive's bundle of ``name`` at ``sha`` (validated names only: a path in the data
    folder is never spelt by upstream)."""
    if not NAME_RE.match(name) or not SHA_RE.match(sha):
        raise InfraError(f"refusing unsafe component name or sha: {name!r} {sha!r}")
    return archive_dir / name / f"{sha}.bundle"


def pin(mirror: Path, sha: str) -> bool:
    """Keep ``sha`` in ``mirror`` for good (a ref that fetch never prunes and gc keeps); False
    when the mirror does not exist or lacks the commit."""
    if not SHA_RE.match(sha):
        raise InfraError(f"refusing unsafe sha: {sha!r}")
    if not (mirror / "HEAD").exists() or not _has_commit(mirror, sha):
        return False
    done = _git(["--git-dir", str(mirror), "update-ref", f"{KEEP_PREFIX}{sha}", sha])
    if done.returncode != 0:
        raise InfraError(f"cannot pin {sha} in {mirror}: {done.stderr.strip()[-300:]}")
    return True


def write_bundle(mirror: Path, sha: str, target: Path) -> Path:
    """A self-contained ``git bundle`` of ``sha`` (pinned in ``mirror``) at ``target``, written
    atomically: a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    done = _git(["--git-dir", str(mirror), "bundle", "create", "--quiet",
                 str(partial.resolve()), f"{KEEP_PREFIX}{sha}"])
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise InfraError(f"git bundle of {sha} in {mirror.name}: {done.stderr.strip()[-300:]}")
    partial.replace(target)
    return target


def _from_bundle(mirror: Path, bundle: Path, sha: str) -> bool:
    """Fetch ``sha`` from an archived bundle into ``mirror``; False if the bundle lacks it."""
    ref = f"{KEEP_PREFIX}{sha}"
    done = _git(["--git-dir", str(mirror), "fetch", "--quiet", "--no-tags", "--",
                 str(bundle.resolve()), f"+{ref}:{ref}"])
    return done.returncode == 0 and _has_commit(mirror, sha)


def _new_mirror(mirror: Path, url: str) -> str | None:
    """Clone ``url`` as a bare mirror; without upstream, an empty repository with ``url`` as
    its origin (the archive may still fill it). The clone's error, if it failed."""
    done = _git(["clone", "--mirror", "--quiet", "--", url, str(mirror)])
    if done.returncode == 0:
        return None
    error = done.stderr.strip()[-500:]
    for args in (["init", "--quiet", "--bare", "--", str(mirror)],
                 ["--git-dir", str(mirror), "remote", "add", "--mirror=fetch", "--", "origin",
                  url]):
        made = _git(args)
        if made.returncode != 0:
            raise InfraError(f"cannot clone {url}: {error}; nor make an empty mirror: "
                             f"{made.stderr.strip()[-300:]}")
    return error


def ensure_commit(repos_dir: Path, name: str, url: str, sha: str,
                  archive_dir: Path | None = None) -> Found:
    """A bare mirror of ``url`` that contains ``sha``, pinned there; fetches only when the commit
    is missing, and falls back to the archive when upstream cannot give it.

    The mirror's fetch never prunes, so the ``refs/certifier/keep/*`` pins (absent upstream)
    survive every fetch.
    """
    if not NAME_RE.match(name) or not SHA_RE.match(sha):
        raise InfraError(f"refusing unsafe component name or sha: {name!r} {sha!r}")
    repos_dir.mkdir(parents=True, exist_ok=True)
    mirror = repos_dir / f"{name}.git"
    with (repos_dir / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fresh, error = not (mirror / "HEAD").exists(), None
        if fresh:
            error = _new_mirror(mirror, url)
        found = _locate(mirror, name, url, sha, archive_dir, fresh, error)
        pin(mirror, sha)
    return found


def _locate(mirror: Path, name: str, url: str, sha: str, archive_dir: Path | None,
            fresh: bool, clone_error: str | None) -> Found:
    if _has_commit(mirror, sha):  # a fresh mirror has only what its clone just fetched
        return Found(mirror, Origin.UPSTREAM if fresh else Origin.MIRROR)
    error = clone_error
    if error is None:
        done = _git(["--git-dir", str(mirror), "fetch", "--quiet", "origin"])
        error = done.stderr.strip()[-500:] if done.returncode != 0 else None
        if error is None and _has_commit(mirror, sha):
            return Found(mirror, Origin.UPSTREAM)
    lacks = error is None  # upstream answered, and has no such commit
    verb = "clone" if clone_error is not None else "fetch"
    why = f"cannot {verb} {url}: {error}" if error else f"commit {sha} of {name} is not in {url}"
    bundle = bundle_path(archive_dir, name, sha) if archive_dir is not None else None
    if bundle is not None and bundle.is_file() and _from_bundle(mirror, bundle, sha):
        return Found(mirror, Origin.ARCHIVE, lacks, f"{why}; taken from the archive {bundle}")
    if bundle is not None:
        why += f" (and the archive has no {bundle.name})"
    raise InfraError(why)


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


def checkout(repos_dir: Path, name: str, url: str, sha: str, dest: Path,
             archive_dir: Path | None = None) -> Path:
    return checkout_from(repos_dir, name, url, sha, dest, archive_dir)[0]


def checkout_from(repos_dir: Path, name: str, url: str, sha: str, dest: Path,
                  archive_dir: Path | None = None) -> tuple[Path, Found]:
    """:func:`checkout`, and where the commit came from (the run log says so)."""
    found = ensure_commit(repos_dir, name, url, sha, archive_dir)
    return extract(found.mirror, sha, dest), found
