"""An upstream that loses a commit for real: a force-push that rewrites history, then ``git gc``.

Shared by the pinning tests (``tests/pinning/``): they need an upstream that truly no longer has
a commit, not a mirror that pretends.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from certifier.demo import world as demo_world


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


def force_push_away(repo: Path, keep: str, files: dict[str, str], message: str) -> str:
    """Reset the branch to ``keep`` and commit ``files`` on it: what was after ``keep`` leaves
    the branch, as a force-push does. Then expire the reflog and ``gc --prune=now``, so the
    repository no longer holds those commits at all. Returns the new head."""
    git(repo, "reset", "-q", "--hard", keep)
    head = demo_world.commit(repo, files, message)
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    return head


def has_commit(repo: Path, sha: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"],
                          capture_output=True, timeout=30, check=False).returncode == 0
