"""The demo fails loudly: what stops its progress is printed as it happens and ends the wait.

The pipeline state is built through the real services (``tests/factories.World``) on SQLite
and PostgreSQL; the watcher reads it as ``certifier demo`` and ``certifier up --demo`` do.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from certifier.demo import scenario
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import knowngood
from tests.factories import World

CRASH = "unexpected error in the runner: TypeError(\"extractall() got 'filter'\")"


@pytest.fixture
def world(world: World) -> World:
    world.commit("nova", "n1")  # the world's policy: one infra retry, then an operator must look
    return world


def _infra_error(world: World, run_id: int) -> None:
    world.claim(run_id)
    world.finish(run_id, [], setup_error=CRASH)


def _exhaust_retries(world: World) -> None:
    for _ in range(2):
        report = world.reconcile()
        _infra_error(world, report.runs_created[0])
        world.clock.advance(timedelta(hours=1))  # past the retry's backoff
    assert world.reconcile().runs_created == []


def _known_good(session: Session) -> bool:
    return knowngood.current(session) is not None


def test_a_first_candidate_stuck_on_infra_errors_ends_the_wait_with_the_reason(
    world: World,
) -> None:
    _exhaust_retries(world)
    lines: list[str] = []
    watcher = scenario.Watcher(world.factory, lines.append)
    with pytest.raises(scenario.DemoFailed, match=r"waits for an operator.*TypeError"):
        watcher.wait("the first known-good", _known_good, timeout=30)
    assert any("is stuck" in line and "retries exhausted" in line and "TypeError" in line
               for line in lines), lines


def test_each_infra_error_is_printed_with_its_reason_as_it_happens(world: World) -> None:
    lines: list[str] = []
    watcher = scenario.Watcher(world.factory, lines.append)
    _infra_error(world, world.reconcile().runs_created[0])
    watcher.poll()
    assert any("infra_error" in line and CRASH in line for line in lines), lines


def test_a_rejected_first_candidate_ends_the_wait_with_its_excuses(world: World) -> None:
    run_id = world.reconcile().runs_created[0]
    world.claim(run_id)
    world.finish(run_id, [SuiteResult(suite="ping", checks=[
        Check("ping", "h1 reaches h2", False, "100 % loss")])])
    world.reconcile()
    lines: list[str] = []
    watcher = scenario.Watcher(world.factory, lines.append)
    with pytest.raises(scenario.DemoFailed, match=r"rejected: .*h1 reaches h2"):
        watcher.wait("the first known-good", _known_good, timeout=30,
                     refused=scenario.first_rejection)


def test_a_quiet_minute_prints_what_the_demo_is_still_waiting_for(world: World) -> None:
    world.reconcile()
    lines: list[str] = []
    watcher = scenario.Watcher(world.factory, lines.append, quiet_after=0.0)
    with pytest.raises(scenario.DemoFailed, match="timed out"):
        watcher.wait("the first known-good", _known_good, timeout=0.6)
    assert any(re.search(r"still waiting for the first known-good: candidate \d+ gating", line)
               for line in lines), lines
