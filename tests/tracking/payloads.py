"""Webhook payloads shaped as GitLab, GitHub and Gerrit document them, and signed headers."""

from __future__ import annotations

import json
import uuid
from typing import Any

from certifier.tracking.webhooks import ZERO_SHA, github_signature


def _commit(sha: str, title: str) -> dict[str, Any]:
    return {"id": sha, "message": f"{title}\n\nbody\n", "title": title,
            "timestamp": "2026-01-01T10:00:00+00:00",
            "author": {"name": "Dev Eloper", "email": "dev@example.org"}}


def gitlab_push(project: str, after: str, before: str = ZERO_SHA, *, ref: str = "refs/heads/main",
                commits: list[tuple[str, str]] | None = None, total: int | None = None,
                kind: str = "push") -> dict[str, Any]:
    listed = commits if commits is not None else ([(after, "a change")] if after != ZERO_SHA
                                                  else [])
    return {"object_kind": kind, "event_name": kind, "before": before, "after": after,
            "ref": ref, "checkout_sha": after, "user_name": "Dev",
            "project": {"path_with_namespace": project, "default_branch": "main"},
            "commits": [_commit(s, t) for s, t in listed],
            "total_commits_count": len(listed) if total is None else total}


def github_push(repo: str, after: str, before: str = ZERO_SHA, *, ref: str = "refs/heads/main",
                commits: list[tuple[str, str]] | None = None,
                forced: bool = False) -> dict[str, Any]:
    listed = commits if commits is not None else ([(after, "a change")] if after != ZERO_SHA
                                                  else [])
    return {"ref": ref, "before": before, "after": after, "created": before == ZERO_SHA,
            "deleted": after == ZERO_SHA, "forced": forced,
            "commits": [_commit(s, t) for s, t in listed],
            "head_commit": _commit(*listed[-1]) if listed else None,
            "repository": {"full_name": repo, "name": repo.split("/")[-1]}}


def gerrit_ref_updated(project: str, new: str, old: str = ZERO_SHA,
                       ref: str = "refs/heads/main") -> dict[str, Any]:
    return {"type": "ref-updated", "eventCreatedOn": 1767261600,
            "refUpdate": {"oldRev": old, "newRev": new, "refName": ref, "project": project},
            "submitter": {"name": "Dev"}}


def gerrit_change_merged(project: str, new: str, branch: str = "main") -> dict[str, Any]:
    return {"type": "change-merged", "eventCreatedOn": 1767261600, "newRev": new,
            "change": {"project": project, "branch": branch, "number": 42,
                       "url": "https://gerrit.example/c/42"},
            "patchSet": {"revision": new, "number": 1}}


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def gitlab_headers(secret: str, key: str | None = None,
                   event: str = "Push Hook") -> dict[str, str]:
    headers = {"X-Gitlab-Token": secret, "X-Gitlab-Event": event,
               "X-Gitlab-Webhook-UUID": str(uuid.uuid4()), "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def github_headers(secret: str, body: bytes, delivery: str | None = None,
                   event: str = "push") -> dict[str, str]:
    return {"X-Hub-Signature-256": github_signature(secret, body), "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "Content-Type": "application/json"}
