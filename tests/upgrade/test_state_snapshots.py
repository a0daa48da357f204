"""State snapshots across the upgrade and the outage measured from ping timestamps, on real
network namespaces: the demo's kvd upgraded in place, recipes with and without a snapshot hook,
and a data-plane link taken down for a known time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from certifier.api.schemas import RunDetail
from certifier.demo import world as demo_world
from tests.requirements import needs_binary, needs_root
from workers.recipes import Deployable, RunInfo
from workers.suites import upgrade
from workers.suites.upgrade import UpgradeOptions
from workers.testbed.base import Testbed

from ..recipes.helpers import Harness, deployable, git_repo, harness, link_cut, write_hook

RUN = RunInfo(run_id=12, kind="gate", candidate_id=3)
NOTE = "kvd 2 serves 64 clients unless local.conf says otherwise; set max_clients again."

pytestmark = [pytest.mark.root, needs_root, needs_binary("ip", "ping", "git")]


def _options(old: Deployable, new: Deployable, **overrides: object) -> UpgradeOptions:
    settings: dict[str, object] = {"ping_interval": 0.02, "settle_s": 0.3, **overrides}
    return UpgradeOptions(run=RUN, known_good_version=4, known_good=(old,), candidate=(new,),
                          hook_timeout=30, **settings)  # type: ignore[arg-type]


def _kvd_upgraded_to(tmp_path: Path, files: dict[str, str]) -> tuple[Harness, int]:
    """Known-good #1: the demo's kvd 1; then a candidate with ``files``: its gate run's id."""
    world = demo_world.build(tmp_path / "world")
    repo = world.repos["api"]
    h = harness(tmp_path, {"api": (repo, world.root / "recipes" / "api")}, driver="netns")
    h.report("api", demo_world.head(repo)[0])
    assert h.promote(h.execute(h.gate_run()).id) == 1
    h.report("api", demo_world.commit(repo, files, "kvd 2"))
    return h, h.gate_run()


def test_a_silent_configuration_reset_across_the_upgrade_fails_the_run_with_the_diff(
    tmp_path: Path,
) -> None:
    h, run_id = _kvd_upgraded_to(tmp_path, {"kvd.py": demo_world.KVD_V2_RESETS})

    run = h.execute(run_id)

    assert run.verdict == "failed", run.log
    assert [e.message for e in run.excuses] == [
        "upgrade check 'state api/config.max_clients' failed: upgrade changed api "
        "config.max_clients: 512 → 64 (not declared in the candidate's upgrade notes)",
        "upgrade check 'state api/service.version' failed: upgrade changed api "
        "service.version: 1 → 2 (not declared in the candidate's upgrade notes)"]
    checks = {c.name: c.passed for c in run.checks if c.suite == "upgrade"}
    assert checks["verify api/data"] and checks["verify api/config"]  # what verify looks at
    diff = RunDetail.of(run).state_diff
    assert [d.component for d in diff] == ["api"] and diff[0].source == "hook"
    changes = {c.key: c for c in diff[0].changes}
    limit = changes["config.max_clients"]
    assert (limit.kind, limit.before, limit.after, limit.fresh, limit.note) == (
        "changed", "512", "64", "64", None)  # 64 is what a fresh kvd 2 runs with
    assert changes["config.idle_timeout_s"].kind == "added"  # new keys are shown, not judged
    assert diff[0].unchanged >= 4  # quota_instances, default_flavor, port, workers, layout


def test_a_change_declared_in_the_candidates_upgrade_notes_passes_with_the_note(
    tmp_path: Path,
) -> None:
    notes = ("upgrade:\n"
             "  - key: config.max_clients\n"
             f"    note: {NOTE}\n"
             "  - key: service.*\n"
             "    note: kvd 2.\n")
    h, run_id = _kvd_upgraded_to(tmp_path, {"kvd.py": demo_world.KVD_V2_RESETS,
                                            ".certifier/upgrade-notes.yaml": notes})

    run = h.execute(run_id)

    assert run.verdict == "passed", run.excuses
    limit = next(c for c in run.checks if c.name == "state api/config.max_clients")
    assert limit.passed
    assert limit.message == ("upgrade changed api config.max_clients: 512 → 64, declared in "
                             f"the candidate's upgrade notes: {NOTE}")
    change = next(c for c in RunDetail.of(run).state_diff[0].changes
                  if c.key == "config.max_clients")
    assert change.note == NOTE


def test_a_recipe_without_a_snapshot_hook_still_gets_a_file_level_diff(
    netns_bed: Testbed, tmp_path: Path,
) -> None:
    repo, first = git_repo(tmp_path / "app", {"app.conf": "workers = 4\nlimit = 512\n"})
    second = demo_world.commit(repo, {"app.conf": "workers = 4\nlimit = 64\n"}, "lower limit")
    recipe = tmp_path / "recipe"
    install = ('mkdir -p "$CERTIFIER_COMPONENT_STATE_DIR/etc"\n'
               'cp app.conf "$CERTIFIER_COMPONENT_STATE_DIR/etc/app.conf"\n'
               'echo kept > "$CERTIFIER_COMPONENT_STATE_DIR/etc/site.ini"\n'
               'head -c 64 /dev/urandom > "$CERTIFIER_COMPONENT_STATE_DIR/data.bin"')
    write_hook(recipe, "deploy", install)
    old = deployable(tmp_path, repo, "app", first, recipe)
    new = deployable(tmp_path, repo, "app", second, recipe)

    result = upgrade.run(netns_bed, _options(old, new))

    assert result.infra_error is None, result.log
    assert [d.component for d in result.state_diffs] == ["app"]
    diff = result.state_diffs[0]
    assert diff.source == "files" and diff.unchanged == 1  # etc/site.ini; data.bin is not config
    [changed] = diff.files
    assert (changed.path, changed.kind) == ("etc/app.conf", "changed")
    assert changed.diff == ("-limit = 512", "+limit = 64")
    assert changed.before != changed.after
    assert all(c.passed for c in result.checks)  # shown, not judged
    assert "etc/app.conf: changed\n    -limit = 512\n    +limit = 64" in result.log


def test_an_unreadable_snapshot_after_the_upgrade_is_a_failed_check_naming_the_line(
    netns_bed: Testbed, tmp_path: Path,
) -> None:
    repo, first = git_repo(tmp_path / "app", {"version": "1\n"})
    second = demo_world.commit(repo, {"version": "2\n"}, "two")
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", "true")
    write_hook(recipe, "snapshot", 'if [ "$(cat version)" = 1 ]; then echo "app.version 1"; '
                                   'else echo "app.version 2"; echo "WARNING: disk nearly full";'
                                   " fi")
    old = deployable(tmp_path, repo, "app", first, recipe)
    new = deployable(tmp_path, repo, "app", second, recipe)

    result = upgrade.run(netns_bed, _options(old, new))

    assert result.infra_error is None, result.log
    state = next(c for c in result.checks if c.name == "state app")
    assert not state.passed
    assert state.message == (
        "snapshot app after the upgrade printed an unreadable snapshot: line 2 is not "
        "`key value` (a key is letters, digits and _ . @ / -): 'WARNING: disk nearly full'")


def test_a_three_second_link_cut_during_the_upgrade_is_measured_as_three_seconds(
    netns_bed: Testbed, tmp_path: Path,
) -> None:
    comp = link_cut(tmp_path, 3)

    result = upgrade.run(netns_bed, _options(comp, comp, ping_interval=0.05))

    assert result.infra_error is None, result.log
    outage = next(m.value for m in result.measurements if m.metric == "outage_s")
    assert outage == pytest.approx(3.0, rel=0.05), result.log
