"""A known-good stays deployable after upstream loses it (issue #13, item 3), end to end.

Real upstream repositories lose the known-good's commit for real (force-push, ``git gc
--prune=now``); tracking polls them with the real git source; the worker's mirror folder is then
deleted, and the real runner deploys the known-good from the archive on a real netns testbed
(the upgrade suite of the next candidate deploys it, creates resources and upgrades in place).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from certifier.api.app import create_app
from certifier.db import models
from certifier.db.session import session_scope
from certifier.demo import world as demo_world
from certifier.pipeline import knowngood
from certifier.tracking import polling
from certifier.tracking.sources import source_factory
from tests.recipes.helpers import Harness, git_repo, harness, write_hook
from tests.requirements import needs_root
from tests.upgrade.test_upgrade_suite import STATEFUL_RECIPE
from workers import archive
from workers.celery_app import create_celery
from workers.dispatch import ARCHIVE_TASK, RECONCILE_TASK

from .upstream import force_push_away, has_commit


def _poll(h: Harness, name: str = "app") -> str:
    with session_scope(h.ctx.session_factory) as session:
        cid = session.scalars(select(models.Component.id)
                              .where(models.Component.name == name)).one()
    return polling.poll(h.ctx.session_factory, cid, source_factory(h.settings.tracking_dir, 5, 30),
                        h.clock, h.dispatcher).outcome


def _manifest_app(h: Harness) -> dict[str, object]:
    app = create_app(h.settings, dispatcher=h.dispatcher, session_factory=h.ctx.session_factory)
    with TestClient(app) as client:
        response = client.get("/api/v1/manifest")
        assert response.status_code == 200
        [app] = response.json()["components"]
        return dict(app)


def _known_good(tmp_path: Path, *, poll: bool, driver: str = "netns"
                ) -> tuple[Harness, Path, str, str]:
    """Known-good #1 at the upstream's second commit: (harness, repo, first, kg). ``poll``:
    tracking sees the commits (else they are reported over the API, tracking never looks)."""
    repo, first = git_repo(tmp_path / "upstream", {"app.conf": "version = 1\n"})
    kg = demo_world.commit(repo, {"app.conf": "version = 2\n"}, "version 2")
    recipe = tmp_path / "recipe"
    for name, body in STATEFUL_RECIPE.items():
        write_hook(recipe, name, body)
    h = harness(tmp_path, {"app": (repo, recipe)}, driver=driver)
    if poll:
        _poll(h)
    else:
        h.report("app", kg)
    run = h.execute(h.gate_run())
    assert run.verdict == "passed", run.log
    assert h.promote(run.id) == 1
    return h, repo, first, kg


def _archived(tmp_path: Path, *, poll: bool) -> tuple[Harness, Path, str, str]:
    """:func:`_known_good` on netns, archived as a worker's reconcile pass archives it."""
    found = _known_good(tmp_path, poll=poll)
    assert set(archive.keep_known_goods(found[0].ctx).written) == {1}
    return found


@pytest.mark.root
@needs_root
def test_a_known_good_force_pushed_away_and_collected_is_deployed_from_the_archive(
    tmp_path: Path,
) -> None:
    h, repo, first, kg = _archived(tmp_path, poll=True)
    new_head = force_push_away(repo, first, {"app.conf": "version = 3\n"}, "version 3, rebased")
    assert not has_commit(repo, kg)
    assert "1 commits gone" in _poll(h)
    shutil.rmtree(h.settings.repos_dir)  # this worker has no mirror any more

    run = h.execute(h.gate_run())  # the new head, upgraded from known-good #1

    assert run.verdict == "passed", run.log
    assert f"checkout app at {kg[:12]} from the archive" in run.log
    assert f"from version = 2 ({kg}) to version = 3" in run.log
    assert {c.name: c.passed for c in run.checks if c.suite == "upgrade"} == {
        "upgrade app": True, "verify app/data": True, "destroy app/cleanup": True}
    assert new_head != kg


@pytest.mark.root
@needs_root
def test_the_manifest_flags_a_known_good_commit_tracking_saw_force_pushed_away(
    tmp_path: Path,
) -> None:
    h, repo, first, kg = _archived(tmp_path, poll=True)
    assert _manifest_app(h)["gone_upstream"] is False
    force_push_away(repo, first, {"app.conf": "version = 3\n"}, "version 3, rebased")
    _poll(h)

    app = _manifest_app(h)

    assert (app["sha"], app["gone_upstream"]) == (kg, True)
    assert str(app["gone_upstream_at"]).startswith(h.clock.now().date().isoformat())


@pytest.mark.root
@needs_root
def test_a_worker_that_finds_the_known_good_gone_upstream_marks_it(tmp_path: Path) -> None:
    """No tracking here (commits reported over the API): the worker's fetch is the witness."""
    h, repo, first, kg = _archived(tmp_path, poll=False)
    new_head = force_push_away(repo, first, {"app.conf": "version = 3\n"}, "version 3, rebased")
    shutil.rmtree(h.settings.repos_dir)
    h.report("app", new_head)

    run = h.execute(h.gate_run())

    assert run.verdict == "passed", run.log
    assert f"app {kg[:12]} is gone upstream: marked in the manifest" in run.log
    assert _manifest_app(h)["gone_upstream"] is True
    with session_scope(h.ctx.session_factory) as session:
        [event] = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "gone_upstream")).all()
        assert event.actor.startswith("worker:") and event.detail["sha"] == kg


def test_archiving_writes_one_bundle_per_commit_once_and_audits_it(tmp_path: Path) -> None:
    h, _, _, kg = _known_good(tmp_path, poll=False, driver="local")

    assert archive.missing(h.ctx)
    first = archive.keep_known_goods(h.ctx)
    again = archive.keep_known_goods(h.ctx)
    assert not archive.missing(h.ctx)

    bundle = h.settings.archive_path / "app" / f"{kg}.bundle"
    assert first.written == {1: {"app": str(bundle)}} and first.failed == {}
    assert again.written == {} and again.failed == {}
    with session_scope(h.ctx.session_factory) as session:
        [event] = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "archive")).all()
        assert event.subject == "known-good 1"
        assert event.detail["bytes"] == bundle.stat().st_size > 0


def test_a_commit_that_cannot_be_archived_is_noted_and_not_retried_at_once(
    tmp_path: Path,
) -> None:
    h, repo, first, kg = _known_good(tmp_path, poll=False, driver="local")
    force_push_away(repo, first, {"app.conf": "version = 3\n"}, "rewritten")
    shutil.rmtree(h.settings.repos_dir)  # lost before any worker archived it

    kept = archive.keep_known_goods(h.ctx)

    assert kept.written == {}
    assert list(kept.failed) == [f"app {kg}"]
    note = h.settings.archive_path / "app" / f"{kg}.bundle.failed"
    assert f"commit {kg} of app is not in {repo}" in note.read_text()
    assert archive.keep_known_goods(h.ctx).failed == {}  # not tried again within the hour


def test_the_reconcile_task_asks_for_the_archive_task_which_writes_the_bundles(
    tmp_path: Path,
) -> None:
    h, _, _, kg = _known_good(tmp_path, poll=False, driver="local")
    app = create_celery(h.settings, h.ctx)  # the embedded broker: messages are files

    app.tasks[RECONCILE_TASK]()
    queued = [f.read_text() for f in (h.settings.data_dir / "broker" / "queue").iterdir()]
    answer = app.tasks[ARCHIVE_TASK]()

    assert sum(ARCHIVE_TASK in message for message in queued) == 1
    assert answer == {"written": {"1": {"app": str(h.settings.archive_path / "app"
                                                   / f"{kg}.bundle")}}, "failed": {}}


def test_a_culprit_hold_at_a_known_good_commit_force_pushed_away_is_released(
    tmp_path: Path,
) -> None:
    """The issue's case: upstream rewrote history under the known-good, its new head breaks the
    deploy and is blamed; holding app at the vanished known-good commit would pin the train to
    it, so the hold is released and the next candidate takes app's head with lib's new one."""
    app, first = git_repo(tmp_path / "app", {"app.conf": "version = 1\n"})
    kg = demo_world.commit(app, {"app.conf": "version = 2\n"}, "version 2")
    lib, _ = git_repo(tmp_path / "lib", {"lib.conf": "version = 1\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", 'if grep -q broken app.conf 2>/dev/null; then echo "broken '
               'config"; exit 1; fi')
    h = harness(tmp_path, {"app": (app, recipe), "lib": (lib, recipe)})
    _poll(h, "app")
    _poll(h, "lib")
    assert h.promote(h.execute(h.gate_run()).id) == 1
    bad = force_push_away(app, first, {"app.conf": "broken\n"}, "rewrite the config")
    _poll(h, "app")
    assert h.execute(h.gate_run()).verdict == "failed"
    [recheck] = h.reconcile().runs_created  # a failed check is rechecked once
    assert h.execute(recheck).verdict == "failed"
    assert len(h.reconcile().rejected) == 1  # app's new head is blamed
    new_lib = demo_world.commit(lib, {"lib.conf": "version = 2\n"}, "lib 2")
    _poll(h, "lib")

    report = h.reconcile()

    with session_scope(h.ctx.session_factory) as session:
        cand = session.get_one(models.Candidate, report.formed[0])
        assert dict(knowngood.combination_of(session, cand.combination_hash)) == {
            "app": bad, "lib": new_lib}
        [released] = session.scalars(select(models.AuditEvent).where(
            models.AuditEvent.action == "release_hold")).all()
        assert (released.subject, released.detail["culprit"], released.detail["held_at"]) == (
            "component app", bad, kg)
