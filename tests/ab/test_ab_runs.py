"""A/B runs through the real runner on real namespaces: the candidate and a control deployment of
the known-good on twin testbeds, the suites interleaved in rounds, both stored, both torn down —
after a normal end and after the worker was SIGKILLed mid-run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from certifier.db.session import session_scope
from certifier.domain.abtest import ABPolicy, needs_more_rounds
from certifier.domain.results import Measurement, Side
from certifier.pipeline import runs
from certifier.settings import (
    AbConfig,
    MarginConfig,
    PingSuiteConfig,
    ThresholdsConfig,
    UpgradeSuiteConfig,
)
from tests.requirements import needs_binary, needs_root
from workers import abrounds, runner
from workers import janitor as worker_janitor
from workers.testbed import records
from workers.testbed.tags import control_tag, run_tag

from ..recipes.helpers import Harness, git_repo, harness, namespaces_of, write_hook

pytestmark = [pytest.mark.root, needs_root, needs_binary("ip", "ping", "git")]

QUICK_PING = PingSuiteConfig(count=3, interval=0.02, mtu_check=False)
# Sub-millisecond RTTs on a shared machine swing by more than any margin: these tests are about
# what an A/B run measures and stores, not about judging it.
LENIENT = ThresholdsConfig(default=MarginConfig(max_worse_pct=1e9))
# The known-good writes version 1; the candidate version 2. A marker file makes version 1's
# deploy fail or hang (the control's deploy: the candidate's never matches).
DEPLOY = """\
if grep -q 'version = 1' app.conf && [ -e {marker}.fail ]; then echo "disk full"; exit 1; fi
if grep -q 'version = 1' app.conf && [ -e {marker}.hang ]; then touch {marker}.hung; sleep 60; fi
echo "deployed $(cat app.conf)"
"""


def _world(tmp_path: Path, **options: Any) -> tuple[Harness, Path, int]:
    """Known-good #1 (version 1, promoted after a single-sided bootstrap run), the marker path
    and a pending A/B gate run of version 2."""
    repo, first = git_repo(tmp_path / "upstream", {"app.conf": "version = 1\n"})
    recipe, marker = tmp_path / "recipe", tmp_path / "marker"
    write_hook(recipe, "deploy", DEPLOY.format(marker=marker))
    h = harness(tmp_path, {"app": (repo, recipe)}, driver="netns", suites=("ping",),
                ping=QUICK_PING, upgrade=UpgradeSuiteConfig(enabled=False), thresholds=LENIENT,
                **options)
    h.report("app", first)
    bootstrap = h.execute(h.gate_run())
    assert (bootstrap.verdict, bootstrap.rounds) == ("passed", 0), bootstrap.log
    assert "A/B: single-sided: there is no known-good to compare with yet" in bootstrap.log
    h.promote(bootstrap.id)
    _, second = git_repo(repo, {"app.conf": "version = 2\n"}, "version 2")
    h.report("app", second)
    return h, marker, h.gate_run()


def _measurements(h: Harness, run_id: int) -> list[Measurement]:
    with session_scope(h.ctx.session_factory) as session:
        return runs.measurements(session, run_id)


def _leftovers(h: Harness, run_id: int) -> list[str]:
    tags = (run_tag(h.settings, run_id), control_tag(h.settings, run_id))
    found = [n for tag in tags for n in namespaces_of(tag)]
    found += [f"record {tag}" for tag in tags
              if records.path_for(h.settings.records_dir, tag).exists()]
    return found


def _execute(h: Harness, run_id: int,
             more: abrounds.MoreRounds = abrounds.stop_at_min) -> None:
    assert runner.execute(h.ctx, run_id, more) is runs.Claim.CLAIMED


def test_an_ab_gate_run_stores_both_sides_in_alternating_order_round_by_round(
        tmp_path: Path) -> None:
    h, _, run_id = _world(tmp_path)
    _execute(h, run_id)
    run = h.run(run_id)
    assert (run.verdict, run.rounds) == ("passed", 2), (run.excuses, run.log)
    order = [(m.side, m.round) for m in _measurements(h, run_id)
             if m.metric == "loss_pct" and m.labels == {"src": "h1", "dst": "h2"}]
    c, k = Side.CANDIDATE, Side.CONTROL
    assert order == [(c, 0), (k, 0), (k, 1), (c, 1)]
    loss = next(m for m in _measurements(h, run_id) if m.metric == "loss_pct")
    assert (loss.events, loss.trials) == (0, 3)
    assert "control: deploy app at" in run.log and "deployed version = 1" in run.log
    assert "deployed version = 2" in run.log


def test_both_testbeds_are_gone_after_an_ab_run(tmp_path: Path) -> None:
    h, _, run_id = _world(tmp_path)
    _execute(h, run_id)
    log = h.run(run_id).log
    assert f"candidate testbed {run_tag(h.settings, run_id)}" in log
    assert f"control testbed {control_tag(h.settings, run_id)}" in log
    assert _leftovers(h, run_id) == []


def test_the_callback_decides_how_many_rounds_are_measured(tmp_path: Path) -> None:
    h, _, run_id = _world(tmp_path, ab=AbConfig(min_rounds=2, max_rounds=5))
    asked: list[int] = []

    def more(measurements: list[Measurement], rounds_done: int) -> bool:
        asked.append(rounds_done)
        assert {m.side for m in measurements} == {Side.CANDIDATE, Side.CONTROL}
        return rounds_done < 3

    _execute(h, run_id, more)
    assert h.run(run_id).rounds == 3
    assert asked == [2, 3]
    assert {m.round for m in _measurements(h, run_id)} == {0, 1, 2}


def test_by_default_the_ab_statistics_decide_the_rounds(tmp_path: Path) -> None:
    h, _, run_id = _world(tmp_path, ab=AbConfig(min_rounds=2, max_rounds=4))
    assert runner.execute(h.ctx, run_id) is runs.Claim.CLAIMED
    done = h.run(run_id).rounds
    measured = _measurements(h, run_id)
    policy = ABPolicy(min_rounds=2, max_rounds=4)

    def asked(rounds: int) -> bool:
        return needs_more_rounds([m for m in measured if m.round < rounds], rounds, policy)

    assert 2 <= done <= 4
    assert all(asked(n) for n in range(2, done))  # each further round was asked for
    assert done == 4 or not asked(done)  # and it stopped when the statistics had decided


def test_a_known_good_that_fails_to_deploy_on_the_control_is_an_infra_error(
        tmp_path: Path) -> None:
    h, marker, run_id = _world(tmp_path)
    Path(f"{marker}.fail").touch()
    _execute(h, run_id)
    run = h.run(run_id)
    assert run.verdict == "infra_error"
    (excuse,) = run.excuses
    assert excuse.message.startswith(
        "the known-good (#1) failed to deploy on the control testbed: ")
    assert "disk full" in excuse.message
    assert _leftovers(h, run_id) == []


def _wait_for(path: Path, child: int) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        finished, _ = os.waitpid(child, os.WNOHANG)
        assert finished == 0, "the run ended before its control deploy hung"
        assert time.monotonic() < deadline, "the control deploy never started"
        time.sleep(0.05)


def test_both_testbeds_are_reaped_after_the_worker_is_killed_mid_run(tmp_path: Path) -> None:
    h, marker, run_id = _world(tmp_path)
    Path(f"{marker}.hang").touch()
    h.ctx.engine.dispose()
    child = os.fork()
    if child == 0:  # the worker: runs until killed
        try:
            h.ctx.after_fork()
            runner.execute(h.ctx, run_id)
        finally:
            os._exit(0)
    try:
        _wait_for(Path(f"{marker}.hung"), child)
        assert len(_leftovers(h, run_id)) == 8  # 3 namespaces and a record each
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)

    lost = worker_janitor.recover(h.ctx)  # what the next worker start does

    assert _leftovers(h, run_id) == []
    assert lost == [run_id]
    assert h.run(run_id).verdict == "infra_error"

