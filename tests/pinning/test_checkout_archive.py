"""Pins and the archive, on real git repositories: a commit upstream lost stays deployable.

Every test makes a real upstream, loses a commit there for real (force-push, reflog expired,
``git gc --prune=now``), and checks out through ``workers.checkout`` as a worker would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from certifier.demo import world as demo_world
from tests.recipes.helpers import git_repo
from workers import checkout
from workers.checkout import Origin
from workers.testbed.base import InfraError

from .upstream import force_push_away, git, has_commit


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[Path, str, str]:
    """An upstream whose second commit (the 'known-good') is then force-pushed away and
    collected: (repo, first sha, the lost sha)."""
    repo, first = git_repo(tmp_path / "upstream", {"app.txt": "version = 1\n"})
    lost = demo_world.commit(repo, {"app.txt": "version = 2\n"}, "two")
    return repo, first, lost


def _archive(tmp_path: Path, repo: Path, sha: str) -> Path:
    """Archive ``sha`` as the worker does for a known-good: pin it, bundle it."""
    found = checkout.ensure_commit(tmp_path / "seed-repos", "app", str(repo), sha)
    return checkout.write_bundle(found.mirror, sha,
                                 checkout.bundle_path(tmp_path / "archive", "app", sha))


def test_a_pinned_commit_survives_a_force_push_a_fetch_and_gc_in_the_mirror(
    tmp_path: Path, upstream: tuple[Path, str, str],
) -> None:
    repo, first, lost = upstream
    repos = tmp_path / "repos"
    found = checkout.ensure_commit(repos, "app", str(repo), lost)
    assert found.origin is Origin.UPSTREAM
    assert git(found.mirror, "rev-parse", f"refs/certifier/keep/{lost}") == lost
    new_head = force_push_away(repo, first, {"app.txt": "version = 3\n"}, "rewritten")
    assert not has_commit(repo, lost)

    again = checkout.ensure_commit(repos, "app", str(repo), new_head)  # fetches the new head
    git(again.mirror, "gc", "-q", "--prune=now")

    assert has_commit(again.mirror, lost)
    tree = checkout.checkout(repos, "app", str(repo), lost, tmp_path / "tree")
    assert (tree / "app.txt").read_text() == "version = 2\n"


def test_an_empty_mirror_takes_a_commit_upstream_lost_from_the_archive(
    tmp_path: Path, upstream: tuple[Path, str, str],
) -> None:
    repo, first, lost = upstream
    _archive(tmp_path, repo, lost)
    force_push_away(repo, first, {"app.txt": "version = 3\n"}, "rewritten")
    shutil.rmtree(tmp_path / "seed-repos")  # no mirror anywhere on this "worker"

    tree, found = checkout.checkout_from(tmp_path / "repos", "app", str(repo), lost,
                                         tmp_path / "tree", tmp_path / "archive")

    assert (tree / "app.txt").read_text() == "version = 2\n"
    assert found.origin is Origin.ARCHIVE
    assert found.upstream_lacks  # upstream answered, without the commit: it is gone
    assert f"commit {lost} of app is not in {repo}" in found.note
    assert git(found.mirror, "rev-parse", f"refs/certifier/keep/{lost}") == lost


def test_a_deleted_upstream_is_unreachable_not_proof_that_the_commit_is_gone(
    tmp_path: Path, upstream: tuple[Path, str, str],
) -> None:
    repo, _, lost = upstream
    _archive(tmp_path, repo, lost)
    shutil.rmtree(repo)

    tree, found = checkout.checkout_from(tmp_path / "repos", "app", str(repo), lost,
                                         tmp_path / "tree", tmp_path / "archive")

    assert (tree / "app.txt").read_text() == "version = 2\n"
    assert found.origin is Origin.ARCHIVE
    assert not found.upstream_lacks
    assert found.note.startswith(f"cannot clone {repo}")


def test_without_an_archived_bundle_the_error_says_what_was_looked_for(
    tmp_path: Path, upstream: tuple[Path, str, str],
) -> None:
    repo, first, lost = upstream
    force_push_away(repo, first, {"app.txt": "version = 3\n"}, "rewritten")
    with pytest.raises(InfraError) as caught:
        checkout.checkout(tmp_path / "repos", "app", str(repo), lost, tmp_path / "tree",
                          tmp_path / "archive")
    assert str(caught.value) == (f"commit {lost} of app is not in {repo} "
                                 f"(and the archive has no {lost}.bundle)")


def test_a_commit_upstream_still_has_is_fetched_not_taken_from_the_archive(
    tmp_path: Path, upstream: tuple[Path, str, str],
) -> None:
    repo, _, lost = upstream
    _archive(tmp_path, repo, lost)
    _, found = checkout.checkout_from(tmp_path / "repos", "app", str(repo), lost,
                                      tmp_path / "tree", tmp_path / "archive")
    assert found.origin is Origin.UPSTREAM
    _, again = checkout.checkout_from(tmp_path / "repos", "app", str(repo), lost,
                                      tmp_path / "tree2", tmp_path / "archive")
    assert again.origin is Origin.MIRROR
