"""Each source against the real thing's protocol: python-gitlab over HTTP to a fake GitLab, httpx
to fake GitHub and Gerrit servers, and git against repositories the tests create and push to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certifier.tracking.sources import (
    GerritSource,
    GitHubSource,
    GitLabSource,
    GitSource,
    RateLimited,
    SourceError,
    SourceSpec,
)

from .conftest import Upstream
from .fakes import FakeGerrit, FakeGitHub, FakeGitLab


def gitlab(fake: FakeGitLab, branch: str = "main", token: str | None = None) -> GitLabSource:
    return GitLabSource(SourceSpec("comp", "gitlab", f"{fake.url}/grp/comp.git", branch,
                                   token=token))


def test_gitlab_branch_head_comes_from_the_branch_api(gitlab_fake: FakeGitLab) -> None:
    repo = gitlab_fake.repo("grp/comp")
    repo.commit()
    head = repo.commit()
    assert gitlab(gitlab_fake, token="glpat-secret").head() == head
    paths = [p for p, _ in gitlab_fake.requests]
    assert paths[0] == "/api/v4/projects/grp%2Fcomp"
    assert paths[1] == "/api/v4/projects/1/repository/branches/main"
    assert gitlab_fake.requests[0][1]["private-token"] == "glpat-secret"


def test_gitlab_commit_range_follows_three_pages_of_link_headers(
    gitlab_fake: FakeGitLab,
) -> None:
    repo = gitlab_fake.repo("grp/comp")
    old = repo.commit()
    new = [repo.commit(title=f"change {i}") for i in range(45)]
    cmp = gitlab(gitlab_fake).compare(old, new[-1], limit=200)
    assert [c.sha for c in cmp.ahead] == new  # oldest first
    assert cmp.ahead[-1].title == "change 44" and cmp.ahead[0].author == "Dev Eloper"
    assert cmp.behind == () and not cmp.truncated
    pages = [p for p, _ in gitlab_fake.requests if "/repository/commits?" in p]
    assert len(pages) == 3 and "page=3" in pages[-1]


def test_gitlab_range_keeps_only_the_newest_commits_past_the_limit(
    gitlab_fake: FakeGitLab,
) -> None:
    repo = gitlab_fake.repo("grp/comp")
    old = repo.commit()
    new = [repo.commit() for _ in range(30)]
    cmp = gitlab(gitlab_fake).compare(old, new[-1], limit=5)
    assert [c.sha for c in cmp.ahead] == new[-5:] and cmp.truncated


def test_gitlab_compare_names_the_commits_a_force_push_took_away(
    gitlab_fake: FakeGitLab,
) -> None:
    repo = gitlab_fake.repo("grp/comp")
    base = repo.commit()
    lost = [repo.commit(), repo.commit()]
    rewritten = repo.commit(parent=base, title="rewritten")
    cmp = gitlab(gitlab_fake).compare(lost[-1], rewritten, limit=100)
    assert [c.sha for c in cmp.ahead] == [rewritten]
    assert sorted(cmp.behind) == sorted(lost)


def test_gitlab_missing_branch_is_none_and_missing_project_an_error(
    gitlab_fake: FakeGitLab,
) -> None:
    gitlab_fake.repo("grp/comp").commit()
    assert gitlab(gitlab_fake, branch="gone").head() is None
    with pytest.raises(SourceError, match="404"):
        GitLabSource(SourceSpec("x", "gitlab", f"{gitlab_fake.url}/grp/nope", "main")).head()


def test_gitlab_429_is_rate_limited_with_the_retry_after_it_sent(
    gitlab_fake: FakeGitLab,
) -> None:
    gitlab_fake.repo("grp/comp").commit()
    gitlab_fake.rate_limit_next, gitlab_fake.retry_after = 1, 42
    with pytest.raises(RateLimited) as caught:
        gitlab(gitlab_fake).head()
    assert caught.value.retry_after == timedelta(seconds=42)


def test_gitlab_last_request_of_the_window_pauses_until_the_reset(
    gitlab_fake: FakeGitLab,
) -> None:
    gitlab_fake.repo("grp/comp").commit()
    gitlab_fake.remaining = 0
    source = gitlab(gitlab_fake)
    source.head()
    assert source.pause_until is not None
    assert source.pause_until > datetime.now(UTC) + timedelta(minutes=5)


def test_gitlab_unreachable_is_a_source_error() -> None:
    source = GitLabSource(SourceSpec("c", "gitlab", "http://127.0.0.1:9/grp/comp", "main"),
                          timeout=2)
    with pytest.raises(SourceError):
        source.head()


def github(fake: FakeGitHub, branch: str = "main") -> GitHubSource:
    return GitHubSource(SourceSpec("comp", "github", "https://github.com/org/comp", branch,
                                   api_url=fake.url, token="ghp_secret"))


def test_github_head_compare_and_force_push(github_fake: FakeGitHub) -> None:
    repo = github_fake.repo("org/comp")
    base = repo.commit()
    ahead = [repo.commit() for _ in range(3)]
    source = github(github_fake)
    assert source.head() == ahead[-1]
    cmp = source.compare(base, ahead[-1], 100)
    assert [c.sha for c in cmp.ahead] == ahead and cmp.behind == ()
    assert cmp.ahead[0].title.startswith("org/comp change") and "\n" not in cmp.ahead[0].title
    rewritten = repo.commit(parent=base)
    forced = source.compare(ahead[-1], rewritten, 100)
    assert [c.sha for c in forced.ahead] == [rewritten]
    assert sorted(forced.behind) == sorted(ahead)
    assert github_fake.requests[0][1]["authorization"] == "Bearer ghp_secret"


def test_github_compare_pages_through_more_than_one_hundred_commits(
    github_fake: FakeGitHub,
) -> None:
    repo = github_fake.repo("org/comp")
    base = repo.commit()
    ahead = [repo.commit() for _ in range(130)]
    cmp = github(github_fake).compare(base, ahead[-1], 500)
    assert [c.sha for c in cmp.ahead] == ahead


def test_github_missing_branch_is_none_and_missing_repo_an_error(
    github_fake: FakeGitHub,
) -> None:
    github_fake.repo("org/comp").commit()
    assert github(github_fake, "gone").head() is None
    with pytest.raises(SourceError, match="not found"):
        GitHubSource(SourceSpec("c", "github", "https://github.com/org/nope", "main",
                                api_url=github_fake.url)).head()


def test_github_403_with_retry_after_is_rate_limited(github_fake: FakeGitHub) -> None:
    github_fake.repo("org/comp").commit()
    github_fake.rate_limit_next, github_fake.retry_after = 1, 7
    with pytest.raises(RateLimited) as caught:
        github(github_fake).head()
    assert caught.value.retry_after == timedelta(seconds=7)


def gerrit(fake: FakeGerrit, branch: str = "main") -> GerritSource:
    return GerritSource(SourceSpec("comp", "gerrit", f"{fake.url}/openstack/comp", branch))


def test_gerrit_head_and_history_through_parents(gerrit_fake: FakeGerrit) -> None:
    repo = gerrit_fake.repo("openstack/comp")
    base = repo.commit()
    ahead = [repo.commit() for _ in range(4)]
    source = gerrit(gerrit_fake)
    assert source.head() == ahead[-1]
    cmp = source.compare(base, ahead[-1], 100)
    assert [c.sha for c in cmp.ahead] == ahead and cmp.behind == ()
    assert cmp.ahead[0].committed_at is not None
    assert "/projects/openstack%2Fcomp/branches/refs%2Fheads%2Fmain" in gerrit_fake.requests[0][0]


def test_gerrit_force_push_is_detected_through_the_branches_containing_the_old_head(
    gerrit_fake: FakeGerrit,
) -> None:
    repo = gerrit_fake.repo("openstack/comp")
    base = repo.commit()
    lost = [repo.commit(), repo.commit()]
    rewritten = repo.commit(parent=base)
    cmp = gerrit(gerrit_fake).compare(lost[-1], rewritten, 100)
    assert [c.sha for c in cmp.ahead] == [rewritten]
    assert sorted(cmp.behind) == sorted(lost)


def test_gerrit_missing_branch_is_none(gerrit_fake: FakeGerrit) -> None:
    gerrit_fake.repo("openstack/comp").commit()
    assert gerrit(gerrit_fake, "stable-1").head() is None


def git_source(upstream: Upstream, tmp_path: Path, branch: str = "main") -> GitSource:
    return GitSource(SourceSpec("comp", "git", str(upstream.bare), branch), tmp_path / "mirrors")


def test_git_head_by_ls_remote_and_history_by_fetch(upstream: Upstream, tmp_path: Path) -> None:
    first = upstream.commit()
    source = git_source(upstream, tmp_path)
    assert source.head() == first
    assert source.commit(first).title == "change 1"
    later = [upstream.commit(f"later {i}") for i in range(3)]
    assert source.head() == later[-1]
    cmp = source.compare(first, later[-1], 100)
    assert [c.title for c in cmp.ahead] == ["later 0", "later 1", "later 2"]
    assert cmp.behind == () and cmp.ahead[-1].author == "Dev"


def test_git_force_push_lists_the_commits_that_left_the_branch(
    upstream: Upstream, tmp_path: Path,
) -> None:
    base = upstream.commit()
    lost = [upstream.commit(), upstream.commit()]
    source = git_source(upstream, tmp_path)
    source.compare(base, lost[-1], 100)  # the mirror now holds the old history
    upstream.reset(base)
    rewritten = upstream.commit("rewritten", push=False)
    upstream.push("--force")
    assert source.head() == rewritten
    cmp = source.compare(lost[-1], rewritten, 100)
    assert [c.sha for c in cmp.ahead] == [rewritten]
    assert sorted(cmp.behind) == sorted(lost)


def test_git_deleted_branch_has_no_head(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit()
    upstream.push(branch="feature")
    source = git_source(upstream, tmp_path, "feature")
    assert source.head() is not None
    upstream.git("push", "--quiet", "origin", "--delete", "feature")
    assert source.head() is None


@pytest.mark.parametrize("url", ["--upload-pack=touch /tmp/pwned", "-oProxyCommand=x",
                                 "a\nb"])
def test_git_refuses_urls_that_could_be_read_as_options(url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsafe"):
        GitSource(SourceSpec("comp", "git", url, "main"), tmp_path)


@pytest.mark.parametrize("branch", ["main;id", "../../etc", "-x", "a b", "$(id)"])
def test_git_refuses_unsafe_branch_names(branch: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsafe"):
        GitSource(SourceSpec("comp", "git", "/srv/repo.git", branch), tmp_path)


def test_git_ext_transport_never_runs_a_command(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    source = GitSource(SourceSpec("comp", "git", f"ext::sh -c touch% {marker}", "main"),
                       tmp_path / "mirrors")
    with pytest.raises(SourceError):
        source.head()
    assert not marker.exists()


def test_a_bogus_sha_never_reaches_git(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit()
    with pytest.raises(SourceError, match="not a sha"):
        git_source(upstream, tmp_path).commit("HEAD; rm -rf /")
