"""Upstream sources behind one small interface: branch head, one commit, history between two shas.

GitLab goes through python-gitlab, GitHub and Gerrit through their REST APIs (httpx), and plain
git through ``git ls-remote`` and ``git fetch`` into a bare mirror of our own. Every network call
has a timeout; rate limits surface as :class:`RateLimited` (with how long to wait) and as
``pause_until`` after a successful call that used the last request of the window, so the poller
can wait instead of hammering. Nothing from a payload reaches a command line: a source gets its
URL, project and branch from the component's validated configuration, shas are checked against
``SHA_RE``, and git is run with argument lists, ``--end-of-options`` and ``--``.

What a source says goes to the API (a poll's ``last_error``, a delivery's outcome), so error
messages are generic: an HTTP status, never a forge's answer body (the ``api_url`` could be an
internal service), and never git's message about a local path (it says whether a file
exists). The details go to the worker log only. Commit dates outside 1900-2199, or unreadable,
are stored as unknown with a note, never a crash.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import gitlab
import httpx
import requests
from gitlab.exceptions import GitlabError, GitlabGetError

from certifier.domain.combination import NAME_RE, SHA_RE
from certifier.limits import COMMIT_TIME_MAX, COMMIT_TIME_MIN
from certifier.settings import BRANCH_RE, PROJECT_RE
from certifier.sourcepolicy import SourcePolicy, SourceRefused

log = logging.getLogger(__name__)
# Commit dates outside this range are stored as unknown: far dates overflow datetime arithmetic
# (0001-01-01 east of UTC) and no real commit has them. The range is the API's too (limits.py).
EARLIEST_DATE = COMMIT_TIME_MIN
LATEST_DATE = COMMIT_TIME_MAX


class SourceError(Exception):
    """The source could not answer (unreachable, refused, not found); phrased for operators,
    and safe to show to anyone (no answer body, no local file state)."""


def failed(public: str, detail: str) -> SourceError:
    """A :class:`SourceError` saying ``public``; ``detail`` goes to the worker log only."""
    log.warning("%s: %s", public, detail)
    return SourceError(f"{public} (details in the worker log)")


class RateLimited(SourceError):
    """The source asked us to slow down; ``retry_after`` says for how long."""

    def __init__(self, message: str, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    title: str = ""
    author: str = ""
    committed_at: datetime | None = None
    note: str = ""  # e.g. why ``committed_at`` is unknown


@dataclass(frozen=True, slots=True)
class Comparison:
    """History between a known head ``old`` and a new head.

    ``ahead``: commits reachable from the new head and not from ``old``, oldest first (at most
    the newest ``limit``). ``behind``: shas reachable from ``old`` and not from the new head —
    not empty means the new head is not a descendant of the old: a force-push.
    """

    ahead: tuple[CommitInfo, ...]
    behind: tuple[str, ...] = ()
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where one component's branch lives, from its (validated) configuration."""

    name: str
    kind: str  # git, gitlab, github, gerrit
    url: str
    branch: str
    project: str | None = None
    api_url: str | None = None
    token: str | None = None


class Source(Protocol):
    """One component's branch at its upstream."""

    pause_until: datetime | None  # set when the last call exhausted the rate-limit window

    def head(self) -> str | None:
        """The branch's head sha; None if the branch does not exist (any more)."""
        ...

    def commit(self, sha: str) -> CommitInfo: ...

    def compare(self, old: str, new: str, limit: int) -> Comparison: ...


def title_of(message: str) -> str:
    return (message.strip().splitlines() or [""])[0][:500]


def storable(text: str) -> str:
    """``text`` without NUL bytes, which upstream data may carry and PostgreSQL text cannot."""
    return text.replace("\x00", "\N{REPLACEMENT CHARACTER}")


def checked_sha(value: object) -> str:
    sha = str(value or "").strip().lower()
    if not SHA_RE.match(sha):
        raise SourceError("the source answered with something that is not a sha")
    return sha


def parse_time(value: object) -> datetime | None:
    """A commit time in UTC; None if absent, unreadable or outside 1900-2199."""
    return timed(value)[0]


def timed(value: object) -> tuple[datetime | None, str]:
    """(the time, "") or (None, why it is unknown); never raises."""
    if value is None or value == "":
        return None, ""
    if not isinstance(value, str):
        return None, "commit date is not text: stored as unknown"
    text = value.strip().replace("Z", "+00:00")
    if len(text) > 19 and text[10] == " " and "+" not in text[19:]:  # Gerrit: UTC, nanoseconds
        text = text[:26].replace(" ", "T") + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None, f"unreadable commit date {value[:40]!r}: stored as unknown"
    if not EARLIEST_DATE <= parsed < LATEST_DATE:
        return None, f"commit date {value[:40]!r} out of range: stored as unknown"
    return parsed, ""


def commit_info(sha: object, title: str, author: str, when: object) -> CommitInfo:
    """A checked commit with its date read by :func:`timed` (the note says if it is unknown)."""
    committed_at, note = timed(when)
    return CommitInfo(checked_sha(sha), title[:500], author[:200], committed_at, note)


def project_of(spec: SourceSpec) -> str:
    """The forge project path: configured, else the URL's path without ``.git`` (and Gerrit's
    ``a/`` authentication prefix)."""
    project = spec.project
    if project is None:
        path = urlsplit(spec.url).path.strip("/").removesuffix(".git")
        project = path.removeprefix("a/") if spec.kind == "gerrit" else path
    if not PROJECT_RE.match(project):
        raise SourceError(f"{spec.name}: cannot tell the project path from {spec.url!r}")
    return project


def api_root(spec: SourceSpec) -> str:
    if spec.api_url:
        return spec.api_url.rstrip("/")
    if spec.kind == "github" and urlsplit(spec.url).hostname == "github.com":
        return "https://api.github.com"
    parts = urlsplit(spec.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SourceError(f"{spec.name}: set api_url; cannot derive it from {spec.url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _retry_after(headers: Mapping[str, str], now: datetime, default: float = 60.0) -> timedelta:
    """How long a rate-limited source asked us to wait (Retry-After, else the reset time)."""
    value = headers.get("retry-after")
    if value:
        if value.strip().isdigit():
            return timedelta(seconds=min(int(value), 86400))
        try:
            when = parsedate_to_datetime(value)
            return max(timedelta(0), when - now)
        except (TypeError, ValueError):
            pass
    reset = headers.get("ratelimit-reset") or headers.get("x-ratelimit-reset")
    if reset and reset.strip().isdigit():
        epoch = int(reset)
        if epoch > 1_000_000_000:  # an epoch time (GitLab, GitHub), not a delta
            return max(timedelta(seconds=1), datetime.fromtimestamp(epoch, UTC) - now)
        return timedelta(seconds=epoch)
    return timedelta(seconds=default)


def _exhausted(headers: Mapping[str, str]) -> bool:
    remaining = headers.get("ratelimit-remaining") or headers.get("x-ratelimit-remaining")
    return remaining is not None and remaining.strip() == "0"


# GitLab ---------------------------------------------------------------------------------------


class _Gitlab(gitlab.Gitlab):
    """python-gitlab that never sleeps through a 429 itself: the poller decides when to retry
    (a worker asleep inside a request holds a slot and hides the rate limit from the API)."""

    def http_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["obey_rate_limit"] = False
        kwargs["max_retries"] = 0
        return super().http_request(*args, **kwargs)


class GitLabSource:
    """GitLab through python-gitlab (v4 API): branch head, commit range, compare."""

    def __init__(self, spec: SourceSpec, *, timeout: float = 10.0,
                 now: Callable[[], datetime] | None = None) -> None:
        self.spec = spec
        self.project_path = project_of(spec)
        self.pause_until: datetime | None = None
        self._now = now or (lambda: datetime.now(UTC))
        self._last_headers: dict[str, str] = {}
        session = requests.Session()
        session.hooks["response"].append(self._remember)
        self._gl = _Gitlab(
            url=api_root(spec), private_token=spec.token or None, timeout=timeout,
            session=session, retry_transient_errors=False, per_page=100,
        )
        self._project: Any = None

    def _remember(self, response: requests.Response, *_: Any, **__: Any) -> None:
        self._last_headers = {k.lower(): v for k, v in response.headers.items()}
        if _exhausted(self._last_headers):
            self.pause_until = self._now() + _retry_after(self._last_headers, self._now())

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except GitlabError as exc:
            if exc.response_code == 429:
                raise RateLimited(f"GitLab rate limit while reading {what}",
                                  _retry_after(self._last_headers, self._now())) from None
            raise failed(f"GitLab {what}: HTTP {exc.response_code}",
                         f"{self.spec.name}: {exc.error_message}") from None
        except requests.RequestException as exc:
            raise failed(f"GitLab {what}: {type(exc).__name__}",
                         f"{self.spec.name}: {exc}") from None

    def _proj(self) -> Any:
        if self._project is None:
            self._project = self._call(f"project {self.project_path}",
                                       lambda: self._gl.projects.get(self.project_path))
        return self._project

    def head(self) -> str | None:
        project = self._proj()

        def get() -> Any:
            try:
                return project.branches.get(self.spec.branch)
            except GitlabGetError as exc:
                if exc.response_code == 404:  # the project exists (read above): no branch
                    return None
                raise

        branch = self._call("branch", get)
        return None if branch is None else checked_sha(branch.commit["id"])

    @staticmethod
    def _info(raw: Mapping[str, Any]) -> CommitInfo:
        return commit_info(raw.get("id"),
                           str(raw.get("title") or title_of(str(raw.get("message") or ""))),
                           str(raw.get("author_name") or ""),
                           raw.get("committed_date") or raw.get("created_at"))

    def commit(self, sha: str) -> CommitInfo:
        sha = checked_sha(sha)
        raw = self._call(f"commit {sha}", lambda: self._proj().commits.get(sha))
        return self._info(raw.attributes)

    def compare(self, old: str, new: str, limit: int) -> Comparison:
        old, new = checked_sha(old), checked_sha(new)
        project = self._proj()

        def newest_first() -> list[CommitInfo]:
            found: list[CommitInfo] = []
            for item in project.commits.list(ref_name=f"{old}..{new}", iterator=True,
                                             per_page=100):
                found.append(self._info(item.attributes))
                if len(found) > limit:
                    break
            return found

        ahead = self._call("commit range", newest_first)
        # Commits in the old head that the new one lacks: a force-push took them away.
        behind_raw = self._call("compare", lambda: project.repository_compare(new, old))
        behind = tuple(checked_sha(c.get("id")) for c in behind_raw.get("commits") or ())
        return Comparison(tuple(reversed(ahead[:limit])), behind, len(ahead) > limit)


# GitHub ---------------------------------------------------------------------------------------


class _HttpSource:
    """Shared by the REST sources: one httpx client, rate-limit bookkeeping, JSON decoding."""

    forge = "HTTP"

    def __init__(self, spec: SourceSpec, base: str, *, headers: dict[str, str],
                 auth: tuple[str, str] | None = None, timeout: float = 10.0,
                 now: Callable[[], datetime] | None = None) -> None:
        self.spec = spec
        self.pause_until: datetime | None = None
        self._now = now or (lambda: datetime.now(UTC))
        self._client = httpx.Client(base_url=base, headers=headers, auth=auth, timeout=timeout,
                                    follow_redirects=False)

    def _decode(self, response: httpx.Response) -> Any:
        return response.json()

    def _get(self, what: str, path: str, params: dict[str, Any] | None = None,
             *, missing_ok: bool = False) -> Any:
        try:
            response = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise failed(f"{self.forge} {what}: {type(exc).__name__}",
                         f"{self.spec.name}: {exc}") from None
        headers = {k.lower(): v for k, v in response.headers.items()}
        limited = response.status_code == 429 or (
            response.status_code == 403 and (_exhausted(headers) or "retry-after" in headers))
        if limited:
            raise RateLimited(f"{self.forge} rate limit while reading {what}",
                              _retry_after(headers, self._now()))
        if _exhausted(headers):
            self.pause_until = self._now() + _retry_after(headers, self._now())
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code != 200:
            raise SourceError(f"{self.forge} {what}: HTTP {response.status_code}")
        try:
            return self._decode(response)
        except ValueError:
            raise SourceError(f"{self.forge} {what}: the answer is not JSON") from None

    def close(self) -> None:
        self._client.close()


class GitHubSource(_HttpSource):
    """GitHub REST v3: ``branches/{branch}``, ``commits/{sha}``, ``compare/{base}...{head}``."""

    forge = "GitHub"

    def __init__(self, spec: SourceSpec, *, timeout: float = 10.0,
                 now: Callable[[], datetime] | None = None) -> None:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "certifier"}
        if spec.token:
            headers["Authorization"] = f"Bearer {spec.token}"
        super().__init__(spec, api_root(spec), headers=headers, timeout=timeout, now=now)
        self.repo = project_of(spec)

    def head(self) -> str | None:
        raw = self._get("branch", f"/repos/{self.repo}/branches/{quote(self.spec.branch)}",
                        missing_ok=True)
        if raw is None:
            if self._get("repository", f"/repos/{self.repo}", missing_ok=True) is None:
                raise SourceError(f"GitHub repository {self.repo} not found")
            return None
        return checked_sha((raw.get("commit") or {}).get("sha"))

    @staticmethod
    def _info(raw: Mapping[str, Any]) -> CommitInfo:
        commit = raw.get("commit") or {}
        author = commit.get("author") or {}
        committer = commit.get("committer") or {}
        return commit_info(raw.get("sha"), title_of(str(commit.get("message") or "")),
                           str(author.get("name") or ""),
                           committer.get("date") or author.get("date"))

    def commit(self, sha: str) -> CommitInfo:
        return self._info(self._get("commit", f"/repos/{self.repo}/commits/{checked_sha(sha)}"))

    def _range(self, base: str, head: str, cap: int) -> tuple[list[CommitInfo], int]:
        """Commits in ``head`` not in ``base``, oldest first (the newest ``cap``), and their
        total count."""
        found: list[CommitInfo] = []
        total = 0
        for page in range(1, 101):
            raw = self._get("compare", f"/repos/{self.repo}/compare/{base}...{head}",
                            {"per_page": 100, "page": page})
            total = int(raw.get("total_commits") or raw.get("ahead_by") or 0)
            items = raw.get("commits") or []
            found.extend(self._info(c) for c in items)
            found = found[-cap:]
            if len(items) < 100 or page * 100 >= total:
                break
        return found, total

    def compare(self, old: str, new: str, limit: int) -> Comparison:
        old, new = checked_sha(old), checked_sha(new)
        ahead, total = self._range(old, new, limit)
        behind: tuple[str, ...] = ()
        status = self._get("compare", f"/repos/{self.repo}/compare/{old}...{new}",
                           {"per_page": 1})
        if int(status.get("behind_by") or 0) > 0:
            gone, _ = self._range(new, old, 10_000)
            behind = tuple(c.sha for c in gone)
        return Comparison(tuple(ahead), behind, total > len(ahead))


# Gerrit ---------------------------------------------------------------------------------------


GERRIT_MAGIC = b")]}'"


class GerritSource(_HttpSource):
    """Gerrit REST: ``projects/{p}/branches/{ref}``, ``commits/{sha}``, ``commits/{sha}/in``.

    Gerrit has no compare endpoint: history is walked through the commits' parents (bounded),
    and ``in`` (the branches containing a commit) tells whether the old head is still on the
    branch. A token ``user:http-password`` switches to the authenticated ``/a/`` API.
    """

    forge = "Gerrit"
    MAX_WALK = 1000

    def __init__(self, spec: SourceSpec, *, timeout: float = 10.0,
                 now: Callable[[], datetime] | None = None) -> None:
        auth: tuple[str, str] | None = None
        base = api_root(spec)
        if spec.token and ":" in spec.token:
            user, password = spec.token.split(":", 1)
            auth = (user, password)
            base += "/a"
        super().__init__(spec, base, headers={"Accept": "application/json"}, auth=auth,
                         timeout=timeout, now=now)
        self.project = quote(project_of(spec), safe="")
        self._cache: dict[str, dict[str, Any]] = {}

    def _decode(self, response: httpx.Response) -> Any:
        body = response.content
        if body.startswith(GERRIT_MAGIC):
            body = body[len(GERRIT_MAGIC):]
        return json.loads(body)

    def head(self) -> str | None:
        ref = quote(f"refs/heads/{self.spec.branch}", safe="")
        raw = self._get("branch", f"/projects/{self.project}/branches/{ref}", missing_ok=True)
        if raw is None:
            if self._get("project", f"/projects/{self.project}", missing_ok=True) is None:
                raise SourceError(f"Gerrit project {project_of(self.spec)} not found")
            return None
        return checked_sha(raw.get("revision"))

    def _raw(self, sha: str) -> dict[str, Any]:
        sha = checked_sha(sha)
        if sha not in self._cache:
            raw = self._get("commit", f"/projects/{self.project}/commits/{sha}")
            if not isinstance(raw, dict):
                raise SourceError(f"Gerrit commit {sha}: unexpected answer")
            self._cache[sha] = raw
        return self._cache[sha]

    def commit(self, sha: str) -> CommitInfo:
        raw = self._raw(sha)
        author = raw.get("author") or {}
        committer = raw.get("committer") or {}
        return commit_info(raw.get("commit") or sha,
                           str(raw.get("subject") or title_of(str(raw.get("message") or ""))),
                           str(author.get("name") or ""),
                           committer.get("date") or author.get("date"))

    def _parents(self, sha: str) -> list[str]:
        return [checked_sha(p.get("commit")) for p in self._raw(sha).get("parents") or ()]

    def _on_branch(self, sha: str) -> bool:
        raw = self._get("commit", f"/projects/{self.project}/commits/{checked_sha(sha)}/in",
                        missing_ok=True)
        return raw is not None and self.spec.branch in (raw.get("branches") or [])

    def compare(self, old: str, new: str, limit: int) -> Comparison:
        old, new = checked_sha(old), checked_sha(new)
        stop: str | None = old
        behind: list[str] = []
        if not self._on_branch(old):  # a force-push: walk the lost side back to the branch
            behind, stop, sha = [old], None, old
            for _ in range(50):
                parents = self._parents(sha)
                if not parents:
                    break
                if self._on_branch(parents[0]):
                    stop = parents[0]  # where the old and the new history meet
                    break
                sha = parents[0]
                behind.append(sha)
        ahead: list[str] = []
        seen = {new}
        frontier = [new]
        while frontier and len(seen) < self.MAX_WALK and len(ahead) <= limit:
            sha = frontier.pop(0)
            if sha == stop:
                continue
            ahead.append(sha)
            for parent in self._parents(sha):
                if parent not in seen:
                    seen.add(parent)
                    frontier.append(parent)
        truncated = len(ahead) > limit or bool(frontier)
        return Comparison(tuple(self.commit(s) for s in reversed(ahead[:limit])),
                          tuple(behind), truncated)


# Plain git ------------------------------------------------------------------------------------


_FORMAT = "%H%x1f%s%x1f%an%x1f%cI"


class GitSource:
    """Any git URL: ``git ls-remote`` for the head, a bare mirror of our own for history.

    The mirror keeps every commit it ever fetched, so after a force-push the old head is still
    there to compute which commits left the branch.
    """

    def __init__(self, spec: SourceSpec, mirror_dir: Path, *, timeout: float = 120.0) -> None:
        if not NAME_RE.match(spec.name) or not BRANCH_RE.match(spec.branch) \
                or spec.branch.startswith("-"):
            raise SourceError(f"refusing unsafe component name or branch: {spec.name!r}")
        if not spec.url or spec.url.startswith("-") or any(c in spec.url for c in "\x00\r\n"):
            raise SourceError(f"refusing unsafe repository URL: {spec.url!r}")
        self.spec = spec
        self.pause_until: datetime | None = None
        self.timeout = timeout
        self.mirror = mirror_dir / f"{spec.name}.git"
        self._ref = f"refs/tracked/{spec.branch}"

    def _git(self, args: list[str], *, mirror: bool = True) -> subprocess.CompletedProcess[str]:
        base = ["git", "-c", "protocol.ext.allow=never"]
        if mirror:
            base += ["--git-dir", str(self.mirror)]
        try:
            return subprocess.run(
                [*base, *args], capture_output=True, text=True, timeout=self.timeout,
                check=False, env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin",
                                  "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
                                  "LC_ALL": "C"})
        except FileNotFoundError:
            raise SourceError("git is not installed (apt-get install git)") from None
        except subprocess.TimeoutExpired:
            raise SourceError(f"git {args[0]} timed out after {self.timeout:.0f} s") from None

    def head(self) -> str | None:
        done = self._git(["ls-remote", "--heads", "--", self.spec.url,
                          f"refs/heads/{self.spec.branch}"], mirror=False)
        if done.returncode != 0:
            raise failed("git ls-remote of the component's URL failed",
                         f"{self.spec.name}: {done.stderr.strip()[-300:]}")
        for line in done.stdout.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{self.spec.branch}":
                return checked_sha(sha)
        return None

    def _fetch(self) -> None:
        if not (self.mirror / "HEAD").exists():
            self.mirror.parent.mkdir(parents=True, exist_ok=True)
            done = self._git(["init", "--quiet", "--bare", "--", str(self.mirror)], mirror=False)
            if done.returncode != 0:
                raise failed("git init of the tracking mirror failed",
                             f"{self.mirror}: {done.stderr.strip()[-300:]}")
        done = self._git(["fetch", "--quiet", "--no-tags", "--", self.spec.url,
                          f"+refs/heads/{self.spec.branch}:{self._ref}"])
        if done.returncode != 0:
            raise failed("git fetch of the component's URL failed",
                         f"{self.spec.name}: {done.stderr.strip()[-300:]}")

    def _has(self, sha: str) -> bool:
        return self._git(["cat-file", "-e", "--end-of-options", f"{sha}^{{commit}}"]) \
            .returncode == 0

    def _log(self, revisions: Iterable[str], limit: int) -> list[CommitInfo]:
        done = self._git(["log", f"--format={_FORMAT}", f"--max-count={limit}", "-z",
                          "--end-of-options", *revisions, "--"])
        if done.returncode != 0:
            raise failed("git log failed", f"{self.spec.name}: {done.stderr.strip()[-300:]}")
        found = []
        for record in done.stdout.split("\x00"):
            parts = record.strip("\n").split("\x1f")
            if len(parts) == 4:
                found.append(commit_info(parts[0], parts[1], parts[2], parts[3]))
        return found

    def commit(self, sha: str) -> CommitInfo:
        sha = checked_sha(sha)
        if not self._has(sha):
            self._fetch()
        found = self._log([sha], 1)
        if not found:
            raise SourceError(f"commit {sha} is not in the component's repository")
        return found[0]

    def compare(self, old: str, new: str, limit: int) -> Comparison:
        old, new = checked_sha(old), checked_sha(new)
        if not self._has(new):
            self._fetch()
        if not self._has(new):
            raise SourceError(f"commit {new} is not in the component's repository")
        if not self._has(old):  # never fetched here (a new mirror): history unknown
            return Comparison((self.commit(new),), (), True)
        ahead = self._log([new, f"^{old}"], limit + 1)
        behind = self._log([old, f"^{new}"], 10_000)
        return Comparison(tuple(reversed(ahead[:limit])), tuple(c.sha for c in behind),
                          len(ahead) > limit)


def build_source(spec: SourceSpec, *, mirror_dir: Path, http_timeout: float = 10.0,
                 git_timeout: float = 120.0) -> Source:
    """The source for a component's configuration."""
    if spec.kind == "gitlab":
        return GitLabSource(spec, timeout=http_timeout)
    if spec.kind == "github":
        return GitHubSource(spec, timeout=http_timeout)
    if spec.kind == "gerrit":
        return GerritSource(spec, timeout=http_timeout)
    if spec.kind == "git":
        return GitSource(spec, mirror_dir, timeout=git_timeout)
    raise SourceError(f"unknown source kind {spec.kind!r}")


def source_factory(mirror_dir: Path, http_timeout: float = 10.0,
                   git_timeout: float = 120.0, policy: SourcePolicy | None = None
                   ) -> Callable[[SourceSpec], Source]:
    """A factory the worker uses for every poll and webhook (one source per call).

    ``policy``: the config's source URL policy, checked again before anything is fetched, so
    a component stored before the policy (or before it was narrowed) is refused too.
    """

    def build(spec: SourceSpec) -> Source:
        if policy is not None:
            try:
                policy.check_component(spec.url, spec.api_url)
            except SourceRefused as exc:
                raise SourceError(f"refused by the config's sources policy: {exc}") from None
        return build_source(spec, mirror_dir=mirror_dir, http_timeout=http_timeout,
                            git_timeout=git_timeout)

    return build
