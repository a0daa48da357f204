"""Signatures, deduplication keys and payload parsing: pure functions, no database."""

from __future__ import annotations

import pytest

from certifier.tracking.webhooks import (
    ZERO_SHA,
    Ignored,
    RefUpdate,
    dedup_key,
    github_signature,
    parse,
    verify,
)

from .payloads import (
    body_of,
    gerrit_change_merged,
    gerrit_ref_updated,
    github_push,
    gitlab_push,
)

A, B, C = "a" * 40, "b" * 40, "c" * 40


def test_github_signature_matches_the_documented_test_vector() -> None:
    assert github_signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


def test_github_signature_is_checked_over_the_raw_body() -> None:
    body = b'{"a": 1}'
    good = {"x-hub-signature-256": github_signature("s3cret", body)}
    assert verify("github", good, body, None, ["s3cret"])
    assert not verify("github", good, b'{"a":1}', None, ["s3cret"])  # same JSON, other bytes
    assert not verify("github", {}, body, None, ["s3cret"])
    assert not verify("github", good, body, None, ["other"])


def test_gitlab_token_must_equal_one_configured_secret() -> None:
    assert verify("gitlab", {"x-gitlab-token": "t0ken"}, b"{}", None, ["x", "t0ken"])
    assert not verify("gitlab", {"x-gitlab-token": "t0ke"}, b"{}", None, ["t0ken"])
    assert not verify("gitlab", {}, b"{}", None, ["t0ken"])


def test_gerrit_secret_comes_as_a_header_or_a_query_token() -> None:
    assert verify("gerrit", {"x-gerrit-token": "sh4red"}, b"{}", None, ["sh4red"])
    assert verify("gerrit", {}, b"{}", "sh4red", ["sh4red"])
    assert not verify("gerrit", {}, b"{}", "wrong", ["sh4red"])


def test_without_a_configured_secret_nothing_verifies() -> None:
    assert not verify("gitlab", {"x-gitlab-token": ""}, b"{}", None, [""])
    assert not verify("gerrit", {}, b"{}", None, [])


def test_gitlab_deduplicates_on_idempotency_key_never_on_the_webhook_uuid() -> None:
    body = b"{}"
    one = dedup_key("gitlab", {"idempotency-key": "k1", "x-gitlab-webhook-uuid": "u1"}, body)
    retry = dedup_key("gitlab", {"idempotency-key": "k1", "x-gitlab-webhook-uuid": "u2"}, body)
    assert one == retry == "idempotency-key:k1"
    old_gitlab = dedup_key("gitlab", {"x-gitlab-webhook-uuid": "u1"}, body)
    assert old_gitlab.startswith("sha256:")
    assert old_gitlab == dedup_key("gitlab", {"x-gitlab-webhook-uuid": "u2"}, body)


def test_github_deduplicates_on_the_delivery_id_and_gerrit_on_the_body() -> None:
    assert dedup_key("github", {"x-github-delivery": "d-1"}, b"x") == "x-github-delivery:d-1"
    assert dedup_key("gerrit", {}, b"x") == dedup_key("gerrit", {}, b"x")
    assert dedup_key("gerrit", {}, b"x") != dedup_key("gerrit", {}, b"y")


def test_a_strange_key_header_falls_back_to_the_body_hash() -> None:
    assert dedup_key("github", {"x-github-delivery": "a b;$(id)"}, b"x").startswith("sha256:")


def test_gitlab_push_lists_its_commits_and_knows_if_the_list_is_complete() -> None:
    update = parse("gitlab", "Push Hook", gitlab_push("grp/comp", B, A, commits=[(B, "fix")]))
    assert isinstance(update, RefUpdate)
    assert (update.project, update.branch, update.before, update.after) == ("grp/comp", "main",
                                                                             A, B)
    assert [c.sha for c in update.commits] == [B] and update.commits[0].title == "fix"
    assert update.complete and update.forced is None
    truncated = parse("gitlab", "Push Hook", gitlab_push("grp/comp", B, A, total=25))
    assert isinstance(truncated, RefUpdate) and not truncated.complete


def test_gitlab_deleted_and_created_branches() -> None:
    deleted = parse("gitlab", "Push Hook", gitlab_push("grp/comp", ZERO_SHA, A))
    assert isinstance(deleted, RefUpdate) and deleted.after is None
    created = parse("gitlab", "Push Hook", gitlab_push("grp/comp", A))
    assert isinstance(created, RefUpdate) and created.before is None


def test_tags_and_other_events_are_ignored_with_a_reason() -> None:
    tag = parse("gitlab", "Tag Push Hook", gitlab_push("grp/comp", A, kind="tag_push",
                                                       ref="refs/tags/v1"))
    assert tag == Ignored("tag push", "grp/comp", "refs/tags/v1")
    gh_tag = parse("github", "push", github_push("org/comp", A, ref="refs/tags/v1"))
    assert isinstance(gh_tag, Ignored) and gh_tag.reason == "tag push"
    assert parse("github", "ping", {"zen": "hi"}) == Ignored("ping")
    mr = parse("gitlab", "Merge Request Hook", {"object_kind": "merge_request"})
    assert isinstance(mr, Ignored) and "not a push" in mr.reason


def test_github_push_says_whether_it_was_forced() -> None:
    update = parse("github", "push", github_push("org/comp", B, A, forced=True))
    assert isinstance(update, RefUpdate) and update.forced is True and update.complete


def test_gerrit_ref_updated_and_change_merged() -> None:
    updated = parse("gerrit", "", gerrit_ref_updated("openstack/nova", B, A))
    assert isinstance(updated, RefUpdate)
    assert (updated.project, updated.branch, updated.before, updated.after) == (
        "openstack/nova", "main", A, B)
    assert not updated.complete  # Gerrit lists no commits: the source fills them in
    merged = parse("gerrit", "", gerrit_change_merged("openstack/nova", C))
    assert isinstance(merged, RefUpdate) and (merged.branch, merged.after) == ("main", C)
    short = parse("gerrit", "", gerrit_ref_updated("openstack/nova", B, A, ref="main"))
    assert isinstance(short, RefUpdate) and short.branch == "main"
    change_ref = parse("gerrit", "", gerrit_ref_updated("openstack/nova", B, ref="refs/changes/1"))
    assert isinstance(change_ref, Ignored) and "not a branch" in change_ref.reason


@pytest.mark.parametrize("payload", [
    {"type": "ref-updated"},
    {"type": "ref-updated", "refUpdate": {"project": "p"}},
    {"type": "change-merged", "change": {"project": "p"}},
    {"type": "change-merged", "change": {"project": "p", "branch": "main"}},
    {"type": "comment-added"},
    {},
])
def test_gerrit_events_with_missing_fields_are_ignored_not_crashed(payload: dict[str, object]
                                                                     ) -> None:
    assert isinstance(parse("gerrit", "", payload), Ignored)


@pytest.mark.parametrize("project", ["../etc/passwd", "grp/../x", "grp/comp;rm -rf /",
                                     "$(id)", "-rf", "a b", ""])
def test_project_paths_with_metacharacters_or_dotdot_are_ignored(project: str) -> None:
    result = parse("gitlab", "Push Hook", gitlab_push(project, A))
    assert isinstance(result, Ignored) and result.reason == "invalid project path"


@pytest.mark.parametrize("ref", ["refs/heads/../../x", "refs/heads/a;b", "refs/heads/-x",
                                 "refs/heads/$(id)", "refs/heads/a b"])
def test_branch_names_with_metacharacters_or_dotdot_are_ignored(ref: str) -> None:
    result = parse("github", "push", github_push("org/comp", A, ref=ref))
    assert isinstance(result, Ignored) and "not a branch" in result.reason


@pytest.mark.parametrize("payload", [
    {"object_kind": "push", "ref": "refs/heads/main", "after": "not-a-sha",
     "project": {"path_with_namespace": "g/c"}},
    {"object_kind": "push", "ref": 5, "after": None, "project": None},
    {"object_kind": "push", "commits": "nope", "project": {"path_with_namespace": "g/c"},
     "ref": "refs/heads/main", "after": A, "total_commits_count": "x"},
    {"object_kind": ["push"]},
])
def test_odd_gitlab_payloads_never_raise(payload: dict[str, object]) -> None:
    parse("gitlab", "Push Hook", payload)


def test_body_of_is_json() -> None:
    assert body_of({"a": 1}) == b'{"a": 1}'
