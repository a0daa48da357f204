"""Webhook signatures and payloads: what GitLab, GitHub and Gerrit send, turned into ref updates.

Pure functions, no database: :func:`verify` checks a delivery against the configured secrets in
constant time, :func:`dedup_key` picks the key that stays the same across redeliveries, and
:func:`parse` turns a payload into a :class:`RefUpdate` (a branch moved, was created or deleted)
or an :class:`Ignored` with the reason that goes to the delivery log.

- GitLab: ``X-Gitlab-Token`` is the secret itself. ``Idempotency-Key`` is the retry key;
  ``X-Gitlab-Webhook-UUID`` changes on every request and ``X-Gitlab-Event-UUID`` is shared by
  recursive hooks, so neither deduplicates.
- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``;
  ``X-GitHub-Delivery`` is the same on redelivery.
- Gerrit's webhooks plugin does not sign, so the shared secret travels as ``X-Gerrit-Token`` or
  as the ``token`` query parameter of the configured URL.
Without a key (Gerrit, GitLab before 17.4) the body's sha256 deduplicates: a replay is the same
bytes, two different pushes never are.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from certifier.domain.combination import SHA_RE
from certifier.settings import BRANCH_RE, PROJECT_RE
from certifier.tracking.sources import CommitInfo, commit_info, title_of

Forge = Literal["gitlab", "github", "gerrit"]
FORGES: tuple[Forge, ...] = ("gitlab", "github", "gerrit")
ZERO_SHA = "0" * 40
_KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
# The headers kept with a stored delivery (never a secret or a signature).
KEPT_HEADERS = ("x-gitlab-event", "x-gitlab-instance", "x-gitlab-webhook-uuid",
                "x-gitlab-event-uuid", "idempotency-key", "x-github-event", "x-github-delivery",
                "x-github-hook-id", "user-agent", "content-type")


@dataclass(frozen=True, slots=True)
class RefUpdate:
    """A branch moved (``before`` → ``after``); ``after`` None: deleted; ``before`` None: created
    or not told. ``complete``: ``commits`` lists every new commit, oldest first."""

    project: str
    branch: str
    before: str | None
    after: str | None
    commits: tuple[CommitInfo, ...] = ()
    forced: bool | None = None  # None: the forge did not say
    complete: bool = False


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str  # shown after "ignored: " in the delivery log
    project: str | None = None
    ref: str | None = None


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(forge: Forge, headers: Mapping[str, str], body: bytes, query_token: str | None,
           secrets: Iterable[str]) -> bool:
    """True if the delivery carries proof of one of ``secrets`` (empty secrets never match).

    Every secret is tried, so the time taken does not tell which one came close.
    """
    usable = [s for s in secrets if s]
    if not usable:
        return False
    ok = False
    if forge == "gitlab":
        given = headers.get("x-gitlab-token", "")
        for secret in usable:
            ok |= bool(given) and _equal(given, secret)
    elif forge == "github":
        given = headers.get("x-hub-signature-256", "")
        for secret in usable:
            ok |= bool(given) and _equal(given, github_signature(secret, body))
    else:
        given = headers.get("x-gerrit-token") or query_token or ""
        for secret in usable:
            ok |= bool(given) and _equal(given, secret)
    return ok


def dedup_key(forge: Forge, headers: Mapping[str, str], body: bytes) -> str:
    """The key that stays the same when the forge delivers this event again."""
    header = {"gitlab": "idempotency-key", "github": "x-github-delivery"}.get(forge)
    value = headers.get(header, "").strip() if header else ""
    if value and _KEY_RE.match(value):
        return f"{header}:{value}"
    return "sha256:" + hashlib.sha256(body).hexdigest()


def event_name(forge: Forge, headers: Mapping[str, str], payload: Mapping[str, Any]) -> str:
    if forge == "gitlab":
        name = headers.get("x-gitlab-event") or str(payload.get("object_kind") or "")
    elif forge == "github":
        name = headers.get("x-github-event", "")
    else:
        name = str(payload.get("type") or "")
    return name[:64] or "unknown"


def _sha(value: object) -> str | None:
    """A sha from a payload; None for missing or all-zero (created/deleted); raises if bogus."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if not SHA_RE.match(text):
        raise ValueError(f"not a sha: {text[:80]!r}")
    return None if text.strip("0") == "" else text


def _branch_of(ref: object) -> tuple[str | None, str]:
    """(branch, ref) for ``refs/heads/x`` or Gerrit's bare ``x``; (None, ref) for anything else."""
    text = str(ref or "")
    if text.startswith("refs/heads/"):
        name = text.removeprefix("refs/heads/")
    elif text.startswith("refs/"):
        return None, text
    else:
        name = text
    return (name, text) if BRANCH_RE.match(name) and not name.startswith("-") else (None, text)


def _project(value: object) -> str | None:
    text = str(value or "")
    return text if PROJECT_RE.match(text) else None


def _commits(items: object, *, sha_key: str, author: str) -> tuple[CommitInfo, ...]:
    found = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        sha = _sha(item.get(sha_key))
        if sha is None:
            continue
        who = item.get("author")
        name = who.get(author) if isinstance(who, dict) else None
        title = item.get("title") or title_of(str(item.get("message") or ""))
        found.append(commit_info(sha, str(title), str(name or ""), item.get("timestamp")))
    return tuple(found)


def _ref_update(project: object, ref: object, before: object, after: object,
                **extra: Any) -> RefUpdate | Ignored:
    proj = _project(project)
    if proj is None:
        return Ignored("invalid project path", str(project or "")[:300] or None)
    text = str(ref or "")
    if text.startswith("refs/tags/"):
        return Ignored("tag push", proj, text[:300])
    branch, full = _branch_of(text)
    if branch is None:
        return Ignored(f"not a branch: {full[:100]!r}", proj, full[:300])
    try:
        return RefUpdate(proj, branch, _sha(before), _sha(after), **extra)
    except ValueError as exc:
        return Ignored(f"malformed payload: {exc}", proj, full[:300])


def parse(forge: Forge, event: str, payload: Mapping[str, Any]) -> RefUpdate | Ignored:
    """What one delivery says happened; never raises on odd input."""
    try:
        if forge == "gitlab":
            return _gitlab(payload)
        if forge == "github":
            return _github(event, payload)
        return _gerrit(payload)
    except (TypeError, ValueError, AttributeError) as exc:
        return Ignored(f"malformed payload: {exc}"[:200])


def _gitlab(payload: Mapping[str, Any]) -> RefUpdate | Ignored:
    kind = payload.get("object_kind") or payload.get("event_name")
    project = (payload.get("project") or {}).get("path_with_namespace") \
        or payload.get("path_with_namespace")
    if kind == "tag_push":
        return Ignored("tag push", _project(project), str(payload.get("ref") or "")[:300])
    if kind != "push":
        return Ignored(f"event {str(kind)[:40]!r} is not a push", _project(project))
    commits = _commits(payload.get("commits"), sha_key="id", author="name")
    total = payload.get("total_commits_count")
    complete = isinstance(total, int) and total <= len(commits)
    return _ref_update(project, payload.get("ref"), payload.get("before"), payload.get("after"),
                       commits=commits, complete=complete)


def _github(event: str, payload: Mapping[str, Any]) -> RefUpdate | Ignored:
    project = (payload.get("repository") or {}).get("full_name")
    if event == "ping":
        return Ignored("ping", _project(project))
    if event != "push":
        return Ignored(f"event {event[:40]!r} is not a push", _project(project))
    commits = _commits(payload.get("commits"), sha_key="id", author="name")
    forced = payload.get("forced")
    return _ref_update(project, payload.get("ref"), payload.get("before"), payload.get("after"),
                       commits=commits, forced=forced if isinstance(forced, bool) else None,
                       complete=len(commits) < 2048)


def _gerrit(payload: Mapping[str, Any]) -> RefUpdate | Ignored:
    kind = payload.get("type")
    if kind == "ref-updated":
        update = payload.get("refUpdate")
        if not isinstance(update, dict):
            return Ignored("incomplete event: no refUpdate")
        if not update.get("newRev") or not update.get("refName"):
            return Ignored("incomplete event: no newRev or refName",
                           _project(update.get("project")))
        return _ref_update(update.get("project"), update.get("refName"), update.get("oldRev"),
                           update.get("newRev"))
    if kind == "change-merged":
        change = payload.get("change")
        if not isinstance(change, dict) or not change.get("project") or not change.get("branch"):
            return Ignored("incomplete event: no change project or branch")
        new_rev = payload.get("newRev") or (payload.get("patchSet") or {}).get("revision")
        if not new_rev:
            return Ignored("incomplete event: no newRev", _project(change.get("project")))
        return _ref_update(change.get("project"), change.get("branch"), None, new_rev)
    return Ignored(f"event {str(kind)[:40]!r} is not handled")
