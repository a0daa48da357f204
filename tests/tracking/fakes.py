"""Local fake forges over real HTTP: the subsets of the GitLab v4, GitHub v3 and Gerrit REST APIs
that the sources use, answered the way those forges document them (GitLab's pagination headers
``X-Page``/``X-Per-Page``/``X-Total``/``X-Next-Page``/``Link``, Gerrit's ``)]}'`` prefix…).

Each fake runs a ``ThreadingHTTPServer`` in a thread on 127.0.0.1 and serves an in-memory commit
graph (:class:`FakeRepo`) that tests change as upstream developers would: commit, force-push,
delete a branch. ``rate_limit_next`` makes the next request answer 429/403 with ``Retry-After``;
``remaining`` sets the rate-limit headers of every answer.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeCommit:
    sha: str
    parents: list[str]
    title: str
    author: str
    date: datetime
    date_text: str | None = None  # what the forge sends instead of ``date`` (odd dates)


@dataclass
class FakeRepo:
    path: str
    commits: dict[str, FakeCommit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    _n: int = 0

    def commit(self, branch: str = "main", title: str | None = None, *,
               parent: str | None = None) -> str:
        self._n += 1
        base = parent if parent is not None else self.branches.get(branch)
        title = title or f"{self.path} change {self._n}"
        sha = hashlib.sha1(f"{self.path}{self._n}{title}{base}".encode()).hexdigest()  # noqa: S324
        self.commits[sha] = FakeCommit(sha, [base] if base else [], title, "Dev Eloper",
                                       EPOCH + timedelta(minutes=self._n))
        self.branches[branch] = sha
        return sha

    def ancestors(self, sha: str) -> list[str]:
        """``sha`` and its ancestors, newest first (breadth-first, by date)."""
        seen, order, frontier = {sha}, [], [sha]
        while frontier:
            current = frontier.pop(0)
            order.append(current)
            for parent in self.commits[current].parents:
                if parent not in seen:
                    seen.add(parent)
                    frontier.append(parent)
        return sorted(order, key=lambda s: self.commits[s].date, reverse=True)

    def range(self, old: str, new: str) -> list[str]:
        """Commits in ``new`` not in ``old``, newest first."""
        exclude = set(self.ancestors(old)) if old in self.commits else set()
        return [s for s in self.ancestors(new) if s not in exclude]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *_: Any) -> None:
        return None

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        with fake.lock:
            fake.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            limited = fake.rate_limit_next > 0
            if limited:
                fake.rate_limit_next -= 1
        if limited:
            self._send(fake.limit_status, {"message": "rate limited"},
                       {"Retry-After": str(fake.retry_after)})
            return
        try:
            status, body, headers = fake.route(parts.path, parse_qs(parts.query))
        except KeyError:
            status, body, headers = 404, {"message": "404 Not Found"}, {}
        self._send(status, body, headers)

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        fake = self.server.fake
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if fake.remaining is not None:
            for name in fake.remaining_headers:
                self.send_header(name, str(fake.remaining))
            self.send_header(fake.reset_header, str(fake.reset_epoch))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeForge


class FakeForge:
    limit_status = 429
    remaining_headers: tuple[str, ...] = ("RateLimit-Remaining",)
    reset_header = "RateLimit-Reset"

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.rate_limit_next = 0
        self.retry_after = 30
        self.remaining: int | None = None
        self.reset_epoch = int((datetime.now(UTC) + timedelta(minutes=10)).timestamp())
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def repo(self, path: str) -> FakeRepo:
        return self.repos.setdefault(path, FakeRepo(path))

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def __enter__(self) -> FakeForge:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# GitLab v4 --------------------------------------------------------------------------------------


class FakeGitLab(FakeForge):
    max_per_page = 20

    def _project(self, ident: str) -> tuple[int, FakeRepo]:
        ident = unquote(ident)
        paths = sorted(self.repos)
        if ident.isdigit():
            return int(ident), self.repos[paths[int(ident) - 1]]
        return paths.index(ident) + 1, self.repos[ident]

    def _commit(self, repo: FakeRepo, sha: str) -> dict[str, Any]:
        c = repo.commits[sha]
        date = c.date_text if c.date_text is not None else c.date.isoformat()
        return {"id": sha, "short_id": sha[:8], "title": c.title, "message": c.title + "\n",
                "author_name": c.author, "author_email": "dev@example.org",
                "authored_date": date, "committer_name": c.author,
                "committed_date": date, "created_at": date,
                "parent_ids": c.parents, "web_url": f"{self.url}/{repo.path}/-/commit/{sha}"}

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        parts = path.removeprefix("/api/v4/projects/").split("/")
        if not path.startswith("/api/v4/projects/"):
            return 404, {"message": "404 Not Found"}, {}
        try:
            pid, repo = self._project(parts[0])
        except (KeyError, ValueError, IndexError):
            return 404, {"message": "404 Project Not Found"}, {}
        rest = parts[1:]
        if not rest:
            return 200, {"id": pid, "path_with_namespace": repo.path, "default_branch": "main",
                         "name": repo.path.rsplit("/", 1)[-1]}, {}
        if rest[:2] == ["repository", "branches"] and len(rest) == 3:
            branch = unquote(rest[2])
            if branch not in repo.branches:
                return 404, {"message": "404 Branch Not Found"}, {}
            return 200, {"name": branch, "commit": self._commit(repo, repo.branches[branch]),
                         "merged": False, "protected": True}, {}
        if rest[:2] == ["repository", "commits"] and len(rest) == 3:
            return 200, self._commit(repo, unquote(rest[2])), {}
        if rest == ["repository", "commits"]:
            ref = query.get("ref_name", ["main"])[0]
            if ".." in ref:
                old, new = ref.split("..", 1)
                shas = repo.range(old, repo.branches.get(new, new))
            else:
                shas = repo.ancestors(repo.branches.get(ref, ref))
            return self._page(path, query, [self._commit(repo, s) for s in shas])
        if rest == ["repository", "compare"]:
            base, head = query["from"][0], query["to"][0]
            base, head = repo.branches.get(base, base), repo.branches.get(head, head)
            shas = list(reversed(repo.range(base, head)))
            return 200, {"commit": self._commit(repo, shas[-1]) if shas else None,
                         "commits": [self._commit(repo, s) for s in shas], "diffs": [],
                         "compare_timeout": False, "compare_same_ref": base == head}, {}
        return 404, {"message": "404 Not Found"}, {}

    def _page(self, path: str, query: dict[str, list[str]], items: list[Any]
              ) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(query.get("per_page", ["20"])[0]), self.max_per_page)
        page = int(query.get("page", ["1"])[0])
        pages = max(1, -(-len(items) // per_page))
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(items)),
                   "X-Total-Pages": str(pages), "X-Next-Page": str(page + 1) if page < pages
                   else "", "X-Prev-Page": str(page - 1) if page > 1 else ""}
        if page < pages:
            keep = {k: v[0] for k, v in query.items() if k not in ("page", "per_page")}
            params = "&".join(f"{k}={quote(v)}" for k, v in keep.items())
            headers["Link"] = (f'<{self.url}{path}?page={page + 1}&per_page={per_page}&{params}>;'
                               ' rel="next"')
        return 200, items[(page - 1) * per_page: page * per_page], headers


# GitHub v3 --------------------------------------------------------------------------------------


class FakeGitHub(FakeForge):
    limit_status = 403
    remaining_headers = ("X-RateLimit-Remaining",)
    reset_header = "X-RateLimit-Reset"

    def _commit(self, repo: FakeRepo, sha: str) -> dict[str, Any]:
        c = repo.commits[sha]
        who = {"name": c.author, "email": "dev@example.org", "date": c.date.isoformat()}
        return {"sha": sha, "commit": {"message": c.title + "\n\nbody", "author": who,
                                       "committer": who},
                "parents": [{"sha": p} for p in c.parents]}

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")
        if parts[0] != "repos" or len(parts) < 3:
            return 404, {"message": "Not Found"}, {}
        full = f"{parts[1]}/{parts[2]}"
        if full not in self.repos:
            return 404, {"message": "Not Found"}, {}
        repo, rest = self.repos[full], parts[3:]
        if not rest:
            return 200, {"full_name": full, "default_branch": "main"}, {}
        if rest[0] == "branches" and len(rest) == 2:
            branch = unquote(rest[1])
            if branch not in repo.branches:
                return 404, {"message": "Branch not found"}, {}
            return 200, {"name": branch, "commit": self._commit(repo, repo.branches[branch])}, {}
        if rest[0] == "commits" and len(rest) == 2:
            return 200, self._commit(repo, rest[1]), {}
        if rest[0] == "compare" and len(rest) == 2:
            base, head = rest[1].split("...", 1)
            ahead = list(reversed(repo.range(base, head)))
            behind = repo.range(head, base)
            per_page = int(query.get("per_page", ["250"])[0])
            page = int(query.get("page", ["1"])[0])
            status = ("identical" if not ahead and not behind else "diverged" if behind and ahead
                      else "behind" if behind else "ahead")
            chunk = ahead[(page - 1) * per_page: page * per_page]
            return 200, {"status": status, "ahead_by": len(ahead), "behind_by": len(behind),
                         "total_commits": len(ahead),
                         "commits": [self._commit(repo, s) for s in chunk]}, {}
        return 404, {"message": "Not Found"}, {}


# Gerrit -----------------------------------------------------------------------------------------


class FakeGerrit(FakeForge):
    def _json(self, body: Any) -> bytes:
        return b")]}'\n" + json.dumps(body).encode()

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        parts = path.removeprefix("/a").strip("/").split("/")
        if parts[0] != "projects" or len(parts) < 2:
            return 404, b"Not found", {}
        name = unquote(parts[1])
        if name not in self.repos:
            return 404, b"Not found", {}
        repo, rest = self.repos[name], parts[2:]
        if not rest:
            return 200, self._json({"id": quote(name, safe=""), "name": name}), {}
        if rest[0] == "branches" and len(rest) == 2:
            ref = unquote(rest[1]).removeprefix("refs/heads/")
            if ref not in repo.branches:
                return 404, b"Not found", {}
            return 200, self._json({"ref": f"refs/heads/{ref}", "revision": repo.branches[ref]}), {}
        if rest[0] == "commits" and len(rest) in (2, 3):
            c = repo.commits[rest[1]]
            if len(rest) == 3 and rest[2] == "in":
                on = [b for b, head in repo.branches.items() if c.sha in repo.ancestors(head)]
                return 200, self._json({"branches": on, "tags": []}), {}
            who = {"name": c.author, "email": "dev@example.org",
                   "date": c.date.strftime("%Y-%m-%d %H:%M:%S.000000000"), "tz": 0}
            parents = [{"commit": p, "subject": repo.commits[p].title} for p in c.parents]
            return 200, self._json({
                "commit": c.sha, "author": who, "committer": who, "subject": c.title,
                "message": c.title + "\n\nChange-Id: I0\n", "parents": parents}), {}
        return 404, b"Not found", {}

