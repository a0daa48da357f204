"""A soak that cannot decide yet is extended, bounded, and says so.

When the week is over but the newest soak run still has series the A/B statistics cannot decide
(too few runs for the level, an ``undecidable`` excuse), the soak goes on, up to
``max_extra_runs`` more runs; then the candidate is promoted with those series named.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import Action, Decision, RunSummary, SoakPolicy, decide

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = SoakPolicy(duration=timedelta(days=1), interval=timedelta(hours=6), min_runs=4,
                    max_extra_runs=2)
BW = "bandwidth.throughput_gbps{dst=h2,src=h1}"
UNDECIDABLE = Excuse("undecidable", BW, f"{BW}: cannot decide yet, needs ≥ 3 more runs",
                     {"runs_needed": 3})


def soak(i: int, hours: float, *excuses: Excuse) -> RunSummary:
    at = T0 + timedelta(hours=hours)
    return RunSummary(i, RunKind.SOAK, Verdict.PASSED, at, at, excuses)


def soaking(runs: list[RunSummary], hours: float) -> Decision:
    return decide(CandidateState.SOAKING, runs, T0 + timedelta(hours=hours), POLICY,
                  soak_started_at=T0)


def week(*last: Excuse) -> list[RunSummary]:
    return [soak(1, 0), soak(2, 6), soak(3, 12), soak(4, 18, *last)]


def test_a_soak_that_decided_everything_promotes_when_its_time_is_up() -> None:
    assert soaking(week(), 25).action is Action.PROMOTE


def test_undecided_series_at_the_end_extend_the_soak_by_a_run_at_the_interval() -> None:
    d = soaking(week(UNDECIDABLE), 25)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.SOAK)
    (extended,) = [e for e in d.excuses if e.kind == "soak_extended"]
    assert BW in extended.message and "extra run 1 of at most 2" in extended.message
    assert extended.data["runs_needed"] == 3


def test_the_extension_is_bounded_and_then_promotes_naming_what_it_could_not_decide() -> None:
    runs = [*week(UNDECIDABLE), soak(5, 24, UNDECIDABLE)]
    assert soaking(runs, 30.5).action is Action.WAIT
    runs.append(soak(6, 30.5, UNDECIDABLE))
    d = soaking(runs, 37)
    assert d.action is Action.PROMOTE
    assert [e.kind for e in d.excuses] == ["undecidable"]


def test_a_later_run_that_decides_ends_the_extension() -> None:
    runs = [*week(UNDECIDABLE), soak(5, 24)]
    assert soaking(runs, 25).action is Action.PROMOTE
