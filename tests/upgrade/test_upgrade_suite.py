"""The upgrade-preservation suite: known-good deployed, resources created, upgraded in place under a
background ping, resources verified — with real recipes, real processes and real namespaces.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from certifier.demo import world as demo_world
from tests.requirements import needs_binary, needs_root
from workers.recipes import Deployable, RunInfo
from workers.suites import upgrade
from workers.suites.upgrade import UpgradeOptions, parse_trace
from workers.testbed.base import Testbed
from workers.testbed.process import pids_with_cookie

from ..recipes.helpers import deployable, git_repo, harness, link_cut, write_hook

RUN = RunInfo(run_id=11, kind="gate", candidate_id=2)


def _options(old: tuple[Deployable, ...], new: tuple[Deployable, ...],
             **overrides: object) -> UpgradeOptions:
    return UpgradeOptions(run=RUN, known_good_version=4, known_good=old, candidate=new,
                          hook_timeout=30, ping_interval=0.02, settle_s=0.3,
                          **overrides)  # type: ignore[arg-type]


# -- the ping trace ------------------------------------------------------------------------------

PING = """PING 198.18.0.12 (198.18.0.12) 56(84) bytes of data.
[1.1] 64 bytes from 198.18.0.12: icmp_seq=1 ttl=64 time=0.05 ms
[1.2] 64 bytes from 198.18.0.12: icmp_seq=2 ttl=64 time=0.05 ms
[1.3] no answer yet for icmp_seq=3
[1.4] no answer yet for icmp_seq=4
[1.5] no answer yet for icmp_seq=5
[1.6] 64 bytes from 198.18.0.12: icmp_seq=6 ttl=64 time=0.05 ms
[1.7] no answer yet for icmp_seq=7
[1.8] 64 bytes from 198.18.0.12: icmp_seq=8 ttl=64 time=0.05 ms
"""


def test_the_trace_counts_losses_and_the_longest_outage() -> None:
    trace = parse_trace(PING + "[1.9] 64 bytes from 198.18.0.12: icmp_seq=9 ttl=64 time=1 ms\n"
                        "\n--- 198.18.0.12 ping statistics ---\n"
                        "10 packets transmitted, 6 received, 40% packet loss, time 900ms\n")
    assert trace.transmitted == 10
    assert trace.lost == [3, 4, 5, 7]  # 10 was in flight when ping stopped: not a loss
    assert trace.longest_loss_run() == 3
    assert trace.answered_after(8) and not trace.answered_after(9)


def test_a_killed_ping_without_a_summary_is_still_read() -> None:
    trace = parse_trace(PING)
    assert trace.transmitted == 8
    assert trace.lost == [3, 4, 5, 7]


# -- the suite on the demo's real workload ------------------------------------------------------

@pytest.mark.root
@needs_root
@needs_binary("ip", "ping", "git")
@pytest.mark.parametrize(("migration", "data_kept"), [
    (demo_world.MIGRATE_FIXED, True),
    (demo_world.MIGRATE_DROPS_STATE, False),
])
def test_the_demo_service_keeps_or_loses_its_data_across_an_upgrade(
    netns_bed: Testbed, tmp_path: Path, migration: str, data_kept: bool,
) -> None:
    world = demo_world.build(tmp_path / "world")
    repo = world.repos["api"]
    old_sha, _ = demo_world.head(repo)
    new_sha = demo_world.commit(repo, {"migrate.py": migration}, "a new migration")
    recipe = world.root / "recipes" / "api"
    old = deployable(tmp_path, repo, "api", old_sha, recipe)
    new = deployable(tmp_path, repo, "api", new_sha, recipe)

    result = upgrade.run(netns_bed, _options((old,), (new,)))

    assert result.infra_error is None, result.log
    checks = {c.name: c for c in result.checks}
    assert checks["upgrade api"].passed
    assert checks["verify api/service"].passed
    assert "restarted: pid" in checks["verify api/service"].message  # a new kvd answers
    assert checks["verify api/config"].passed  # local.conf survived and is in effect
    assert checks["verify api/data"].passed is data_kept, checks["verify api/data"].message
    if not data_kept:
        assert checks["verify api/data"].message.startswith("0 of 50 keys left")
    assert checks["destroy api/cleanup"].passed
    metrics = {m.metric: m for m in result.measurements}
    assert set(metrics) == {"duration_s", "outage_s", "lost_packets"}
    assert metrics["outage_s"].value == 0 and metrics["lost_packets"].value == 0
    assert metrics["outage_s"].labels == {"src": "h1", "dst": "h2"}
    # kvd ran inside h1's namespace, started by the hooks: teardown finds it by the cookie.
    assert pids_with_cookie(netns_bed.cookie)


@pytest.mark.root
@needs_root
@needs_binary("ip", "ping", "git")
def test_the_outage_of_the_data_plane_during_the_upgrade_is_measured(
    netns_bed: Testbed, tmp_path: Path,
) -> None:
    comp = link_cut(tmp_path, 0.6)

    result = upgrade.run(netns_bed, _options((comp,), (comp,), max_outage_s=0.2))

    assert result.infra_error is None, result.log
    metrics = {m.metric: m.value for m in result.measurements}
    assert 0.4 <= metrics["outage_s"] <= 1.5, result.log
    assert metrics["lost_packets"] >= 15
    limit = next(c for c in result.checks if c.name == "outage h1->h2")
    assert not limit.passed and "limit 0.2 s" in limit.message
    assert next(c for c in result.checks if c.name == "upgrade net").passed


@pytest.mark.root
@needs_root
@needs_binary("ip", "ping", "git")
def test_an_upgrade_that_cuts_the_data_plane_for_good_fails(netns_bed: Testbed,
                                                              tmp_path: Path) -> None:
    repo, sha = git_repo(tmp_path / "net", {"version": "1\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", "true")
    write_hook(recipe, "upgrade", 'ip -n "$CERTIFIER_HOST_H2_NS" link set eth0 down')
    comp = deployable(tmp_path, repo, "net", sha, recipe)

    result = upgrade.run(netns_bed, _options((comp,), (comp,)))

    cut = next(c for c in result.checks if c.name == "data plane h1->h2")
    assert not cut.passed and "cannot reach h2" in cut.message


@pytest.mark.root
@needs_root
@needs_binary("ip", "ping", "git")
def test_a_known_good_that_does_not_deploy_is_an_infra_error(netns_bed: Testbed,
                                                             tmp_path: Path) -> None:
    repo, sha = git_repo(tmp_path / "app", {"version": "1\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", "echo 'no space left on device'; exit 1")
    comp = deployable(tmp_path, repo, "app", sha, recipe)

    result = upgrade.run(netns_bed, _options((comp,), (comp,)))

    assert result.checks == [] and result.measurements == []
    assert result.infra_error is not None
    assert "known-good #4 did not deploy" in result.infra_error
    assert "no space left on device" in result.infra_error


# -- through the runner (local driver: no root needed) ------------------------------------------

def _two_commits(tmp_path: Path) -> tuple[Path, str, str]:
    repo, first = git_repo(tmp_path / "upstream", {"app.conf": "version = 1\n"})
    second = demo_world.commit(repo, {"app.conf": "version = 2\n"}, "version 2")
    return repo, first, second


STATEFUL_RECIPE = {
    # deploy leaves a mark in the component's state folder; upgrade must find it there.
    "deploy": 'cp app.conf "$CERTIFIER_COMPONENT_STATE_DIR/installed.conf"\n'
              'echo "deployed $(cat app.conf)"',
    "upgrade": 'test -f "$CERTIFIER_COMPONENT_STATE_DIR/installed.conf" || exit 9\n'
               'echo "from $(cat "$CERTIFIER_COMPONENT_STATE_DIR/installed.conf")'
               ' ($CERTIFIER_FROM_COMMIT) to $(cat app.conf)"\n'
               'cp app.conf "$CERTIFIER_COMPONENT_STATE_DIR/installed.conf"',
    "resources": 'case $1 in\n'
                 '  create) echo kept > "$CERTIFIER_COMPONENT_STATE_DIR/data"; echo "ok data";;\n'
                 '  verify) grep -q kept "$CERTIFIER_COMPONENT_STATE_DIR/data" '
                 '&& echo "ok data: still there" || { echo "not ok data: gone"; exit 1; };;\n'
                 '  destroy) rm "$CERTIFIER_COMPONENT_STATE_DIR/data"; echo "ok cleanup";;\n'
                 'esac',
}


def test_without_a_known_good_the_upgrade_suite_is_a_note_not_a_failure(tmp_path: Path) -> None:
    repo, first, _ = _two_commits(tmp_path)
    recipe = tmp_path / "recipe"
    for name, body in STATEFUL_RECIPE.items():
        write_hook(recipe, name, body)
    h = harness(tmp_path, {"app": (repo, recipe)})
    h.report("app", first)
    run = h.execute(h.gate_run())
    assert run.verdict == "passed"
    assert "suite upgrade: skipped: there is no known-good to upgrade from yet" in run.log
    assert not [c for c in run.checks if c.suite == "upgrade"]


def test_a_gate_run_upgrades_the_known_good_in_place_and_verifies_its_resources(
    tmp_path: Path,
) -> None:
    repo, first, second = _two_commits(tmp_path)
    recipe = tmp_path / "recipe"
    for name, body in STATEFUL_RECIPE.items():
        write_hook(recipe, name, body)
    h = harness(tmp_path, {"app": (repo, recipe)})
    h.report("app", first)
    first_run = h.execute(h.gate_run())
    assert h.promote(first_run.id) == 1
    h.report("app", second)

    run = h.execute(h.gate_run())

    assert run.verdict == "passed", run.excuses
    upgrade_checks = {c.name: c.passed for c in run.checks if c.suite == "upgrade"}
    assert upgrade_checks == {"upgrade app": True, "verify app/data": True,
                              "destroy app/cleanup": True}
    assert {m.metric for m in run.measurements if m.suite == "upgrade"} == {
        "duration_s", "outage_s", "lost_packets"}
    assert f"from version = 1 ({first}) to version = 2" in run.log
    assert "suite upgrade: known-good #1 deployed, then upgraded in place" in run.log


def test_a_recipe_without_upgrade_is_deployed_again_as_its_upgrade(tmp_path: Path) -> None:
    repo, first, second = _two_commits(tmp_path)
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", 'echo "hook=$CERTIFIER_HOOK from=${CERTIFIER_FROM_COMMIT:-none}"')
    h = harness(tmp_path, {"app": (repo, recipe)})
    h.report("app", first)
    assert h.promote(h.execute(h.gate_run()).id) == 1
    h.report("app", second)
    run = h.execute(h.gate_run())
    assert run.verdict == "passed"
    assert f"hook=upgrade from={first}" in run.log
    assert any(c.name == "upgrade app" and c.passed for c in run.checks)


def test_an_upgrade_that_loses_the_resources_fails_the_run_naming_the_resource(
    tmp_path: Path,
) -> None:
    repo, first, second = _two_commits(tmp_path)
    recipe = tmp_path / "recipe"
    for name, body in STATEFUL_RECIPE.items():
        write_hook(recipe, name, body)
    write_hook(recipe, "upgrade", 'rm -f "$CERTIFIER_COMPONENT_STATE_DIR/data"')
    h = harness(tmp_path, {"app": (repo, recipe)})
    h.report("app", first)
    assert h.promote(h.execute(h.gate_run()).id) == 1
    h.report("app", second)
    run = h.execute(h.gate_run())
    assert run.verdict == "failed"
    assert [e.message for e in run.excuses] == [
        "upgrade check 'verify app/data' failed: gone"]
