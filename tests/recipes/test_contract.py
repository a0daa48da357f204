"""The recipe contract (docs/recipes.md): environment, exit codes, result lines, run log.

Hooks are real executables run through :class:`workers.recipes.Recipes` on a ``local`` testbed
(no root needed), and through the real runner on a SQLite pipeline for what a run records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from certifier.api.app import create_app
from certifier.pipeline.dispatch import RecordingDispatcher
from workers.recipes import Deployable, Recipes, RunInfo, reported_results
from workers.testbed.base import Testbed, TestbedSpec
from workers.testbed.factory import create_testbed

from .helpers import git_repo, harness, write_hook

DUMP_ENV = """python3 -c 'import json, os, sys
print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("CERTIFIER_")}))
' > "$CERTIFIER_COMPONENT_STATE_DIR/env-$CERTIFIER_HOOK${1:+-$1}.json"
"""


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Testbed]:
    testbed = create_testbed(TestbedSpec(name="t", driver="local"), tag="rc1" + str(id(tmp_path)
                             % 10**6), state_dir=tmp_path / "state",
                             records_dir=tmp_path / "records")
    yield testbed
    testbed.teardown()


def _recipes(bed: Testbed, log: list[str], timeout: float = 10) -> Recipes:
    return Recipes(bed, RunInfo(run_id=7, kind="gate", candidate_id=3), timeout, log.append)


def _component(tmp_path: Path, hooks: dict[str, str], run_in: str = "controller",
               sha: str = "a" * 40) -> Deployable:
    recipe = tmp_path / "recipe"
    for name, body in hooks.items():
        write_hook(recipe, name, body)
    checkout = tmp_path / f"src-{sha[:4]}"
    checkout.mkdir(exist_ok=True)
    return Deployable("web", sha, checkout, recipe, run_in)


def test_every_hook_gets_the_documented_environment(bed: Testbed, tmp_path: Path) -> None:
    comp = _component(tmp_path, {"deploy": DUMP_ENV, "upgrade": DUMP_ENV,
                                 "resources": DUMP_ENV})
    newer = Deployable("web", "b" * 40, tmp_path / "src-new", comp.recipe)
    newer.checkout.mkdir()
    recipes = _recipes(bed, [])
    recipes.call(comp, "deploy", suite="deploy", check="web")
    recipes.call(newer, "upgrade", suite="upgrade", check="upgrade web", previous=comp)
    recipes.call(newer, "resources", suite="upgrade", check="verify web", action="verify")
    state = recipes.state_dir("web")
    deploy = json.loads((state / "env-deploy.json").read_text())
    assert deploy["CERTIFIER_HOOK"] == "deploy"
    assert deploy["CERTIFIER_COMPONENT"] == "web"
    assert deploy["CERTIFIER_COMMIT"] == "a" * 40
    assert deploy["CERTIFIER_CHECKOUT"] == str(comp.checkout)
    assert deploy["CERTIFIER_RECIPE_DIR"] == str(comp.recipe)
    assert deploy["CERTIFIER_COMPONENT_STATE_DIR"] == str(state)
    assert (deploy["CERTIFIER_RUN_ID"], deploy["CERTIFIER_RUN_KIND"],
            deploy["CERTIFIER_CANDIDATE_ID"]) == ("7", "gate", "3")
    assert deploy["CERTIFIER_STATE_DIR"] == str(bed.state_dir)
    assert deploy["CERTIFIER_HOSTS"] == "h1 h2" and deploy["CERTIFIER_HOST_H2_ADDR"]
    assert "CERTIFIER_FROM_COMMIT" not in deploy and "CERTIFIER_ACTION" not in deploy
    upgrade = json.loads((state / "env-upgrade.json").read_text())
    assert upgrade["CERTIFIER_COMMIT"] == "b" * 40
    assert upgrade["CERTIFIER_FROM_COMMIT"] == "a" * 40
    assert upgrade["CERTIFIER_FROM_CHECKOUT"] == str(comp.checkout)
    verify = json.loads((state / "env-resources-verify.json").read_text())
    assert verify["CERTIFIER_ACTION"] == "verify"


def test_the_worker_environment_never_reaches_a_hook(bed: Testbed, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTIFIER_DATABASE_URL", "postgresql://secret@db/certifier")
    comp = _component(tmp_path, {"deploy": DUMP_ENV})
    recipes = _recipes(bed, [])
    recipes.call(comp, "deploy", suite="deploy", check="web")
    env = json.loads((recipes.state_dir("web") / "env-deploy.json").read_text())
    assert "CERTIFIER_DATABASE_URL" not in env


@pytest.mark.parametrize(("body", "passed", "message"), [
    ("echo fine", True, ""),
    ("echo one; echo two; echo 'the disk is full' >&2; exit 3", False,
     "exit 3: one\ntwo\nthe disk is full"),
    ("echo 'not applicable here'; exit 77", True, "skipped: not applicable here"),
])
def test_an_exit_status_becomes_one_check_with_the_last_lines(
    bed: Testbed, tmp_path: Path, body: str, passed: bool, message: str,
) -> None:
    comp = _component(tmp_path, {"deploy": body})
    [outcome] = _recipes(bed, []).call(comp, "deploy", suite="deploy", check="web")
    assert outcome.infra_error is None
    [check] = outcome.checks
    assert (check.suite, check.name, check.passed, check.message) == (
        "deploy", "web", passed, message)


def test_exit_75_is_the_testbeds_fault_not_the_candidates(bed: Testbed, tmp_path: Path) -> None:
    comp = _component(tmp_path, {"deploy": "echo 'mirror unreachable'; exit 75"})
    [outcome] = _recipes(bed, []).call(comp, "deploy", suite="deploy", check="web")
    assert outcome.checks == ()
    assert outcome.infra_error is not None and "mirror unreachable" in outcome.infra_error


def test_a_hook_that_hangs_fails_as_timed_out(bed: Testbed, tmp_path: Path) -> None:
    comp = _component(tmp_path, {"deploy": "echo starting; sleep 60"})
    [outcome] = _recipes(bed, [], timeout=1).call(comp, "deploy", suite="deploy", check="web")
    [check] = outcome.checks
    assert not check.passed
    assert check.message == "timed out after 1 s; last output: starting"


def test_ok_and_not_ok_lines_become_one_check_per_resource(bed: Testbed,
                                                            tmp_path: Path) -> None:
    body = ("echo 'ok service: answering on 198.18.0.11:8774'\n"
            "echo 'not ok data: 0 of 50 keys left'\n"
            "echo 'ok config'\nexit 1")
    comp = _component(tmp_path, {"resources": body})
    [outcome] = _recipes(bed, []).call(comp, "resources", suite="upgrade", check="verify web",
                                       action="verify")
    assert [(c.name, c.passed, c.message) for c in outcome.checks] == [
        ("verify web/service", True, "answering on 198.18.0.11:8774"),
        ("verify web/data", False, "0 of 50 keys left"),
        ("verify web/config", True, ""),
    ]


def test_a_failing_exit_without_a_not_ok_line_still_fails(bed: Testbed,
                                                           tmp_path: Path) -> None:
    comp = _component(tmp_path, {"resources": "echo 'ok data'; echo crashed >&2; exit 2"})
    [outcome] = _recipes(bed, []).call(comp, "resources", suite="upgrade", check="verify web",
                                       action="verify")
    assert [(c.name, c.passed) for c in outcome.checks] == [
        ("verify web/data", True), ("verify web", False)]
    assert outcome.checks[1].message == "exit 2: ok data\ncrashed"


def test_run_in_hosts_runs_once_per_host(bed: Testbed, tmp_path: Path) -> None:
    comp = _component(tmp_path, {"deploy": 'echo "here: $CERTIFIER_HOST"'}, run_in="hosts")
    outcomes = _recipes(bed, []).call(comp, "deploy", suite="deploy", check="web")
    assert [o.checks[0].name for o in outcomes] == ["web on h1", "web on h2"]
    assert [o.result.output_tail for o in outcomes] == ["here: h1", "here: h2"]


def test_a_recipe_without_the_hook_is_not_called(bed: Testbed, tmp_path: Path) -> None:
    comp = _component(tmp_path, {"deploy": "true"})
    assert _recipes(bed, []).call(comp, "upgrade", suite="upgrade", check="upgrade web") == []


def test_result_lines_are_read_strictly() -> None:
    lines = reported_results("ok\nokay data\nnot ok disk # full\n  ok indented\nok a/b: x\n")
    assert [(r.passed, r.name, r.message) for r in lines] == [
        (False, "disk", "full"), (True, "a/b", "x")]


def test_a_failed_deploy_fails_the_run_and_its_log_is_served_as_text(tmp_path: Path) -> None:
    repo, sha = git_repo(tmp_path / "upstream", {"app.conf": "x = 1\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", 'echo "installing $(cat app.conf)"\n'
                                 "for i in $(seq 1 30); do echo step $i; done\n"
                                 "echo 'cannot bind port 80' >&2; exit 1")
    h = harness(tmp_path, {"app": (repo, recipe)})
    h.report("app", sha)
    run = h.execute(h.gate_run())
    assert run.verdict == "failed"
    [excuse] = run.excuses
    assert excuse.message.startswith("deploy check 'app' failed: exit 1: step 12\n")
    assert excuse.message.endswith("step 30\ncannot bind port 80")
    assert "deploy app at " in run.log and "installing x = 1" in run.log
    assert "deploy failed: suites skipped" in run.log
    app = create_app(h.settings, dispatcher=RecordingDispatcher(),
                     session_factory=h.ctx.session_factory)
    with TestClient(app) as client:
        answer = client.get(f"/api/v1/runs/{run.id}/log")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert "cannot bind port 80" in answer.text
        assert client.get("/api/v1/runs/999/log").status_code == 404
        assert "cannot bind port 80" in client.get(f"/api/v1/runs/{run.id}").json()["log"]


def test_a_hook_that_cannot_start_is_an_infra_error_for_the_run(tmp_path: Path) -> None:
    repo, sha = git_repo(tmp_path / "upstream", {"app.conf": "x = 1\n"})
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "deploy").write_text("#!/bin/sh\ntrue\n")  # not executable
    h = harness(tmp_path, {"app": (repo, recipe)})
    h.report("app", sha)
    run = h.execute(h.gate_run())
    assert run.verdict == "infra_error"
    assert "not executable" in run.excuses[0].message


def test_a_hook_reporting_testbed_trouble_makes_the_run_an_infra_error(tmp_path: Path) -> None:
    repo, sha = git_repo(tmp_path / "upstream", {"app.conf": "x = 1\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", "echo 'package mirror did not answer'; exit 75")
    h = harness(tmp_path, {"app": (repo, recipe)}, hook_timeout=timedelta(seconds=10))
    h.report("app", sha)
    run = h.execute(h.gate_run())
    assert run.verdict == "infra_error"
    assert "package mirror did not answer" in run.excuses[0].message
