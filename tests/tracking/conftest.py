"""Fixtures for tracking tests: fake forges over real HTTP, real git repositories, a world."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fakes import FakeGerrit, FakeGitHub, FakeGitLab

GIT_ENV = {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.org",
           "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.org",
           "HOME": "/nonexistent", "PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture
def gitlab_fake() -> Iterator[FakeGitLab]:
    with FakeGitLab() as fake:
        yield fake


@pytest.fixture
def github_fake() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def gerrit_fake() -> Iterator[FakeGerrit]:
    with FakeGerrit() as fake:
        yield fake


class Upstream:
    """A bare 'upstream' repository and a developer's clone that commits and pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream.git"
        self.work = root / "work"
        self.git("init", "--quiet", "--bare", "-b", "main", str(self.bare), cwd=root)
        self.git("clone", "--quiet", str(self.bare), str(self.work), cwd=root)
        self.git("checkout", "--quiet", "-b", "main")
        self.n = 0

    def git(self, *args: str, cwd: Path | None = None, date: str | None = None) -> str:
        env = GIT_ENV if date is None else {**GIT_ENV, "GIT_COMMITTER_DATE": date,
                                            "GIT_AUTHOR_DATE": date}
        done = subprocess.run(["git", *args], cwd=cwd or self.work, env=env,
                              capture_output=True, text=True, check=True, timeout=60)
        return done.stdout.strip()

    def commit(self, title: str | None = None, push: bool = True, date: str | None = None) -> str:
        """A new commit; ``date`` as GIT_COMMITTER_DATE takes it, e.g. ``@<epoch> +0000``."""
        self.n += 1
        (self.work / "file.txt").write_text(f"change {self.n}\n")
        self.git("add", "file.txt")
        self.git("commit", "--quiet", "-m", title or f"change {self.n}", date=date)
        if push:
            self.push()
        return self.git("rev-parse", "HEAD")

    def push(self, *extra: str, branch: str = "main") -> None:
        self.git("push", "--quiet", *extra, "origin", f"HEAD:refs/heads/{branch}")

    def reset(self, ref: str) -> None:
        self.git("reset", "--quiet", "--hard", ref)


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path)
