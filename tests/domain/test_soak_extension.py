"""A soak that cannot decide yet is extended, bounded, and says so.

When the week is over but the newest soak run still has series the A/B statistics cannot decide
(too few runs for the level, an ``undecidable`` excuse), the soak goes on, up to
``max_extra_runs`` more runs; then the candidate is promoted with those series named — unless
one of them leans worse: then it waits for a person, never a silent pass.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import (
    Action,
    Decision,
    RunSummary,
    SoakPolicy,
    apply_waivers,
    blocking,
    decide,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = SoakPolicy(duration=timedelta(days=1), interval=timedelta(hours=6), min_runs=4,
                    max_extra_runs=2)
BW = "bandwidth.throughput_gbps{dst=h2,src=h1}"
UNDECIDABLE = Excuse("undecidable", BW, f"{BW}: cannot decide yet, needs ≥ 1 more run",
                     {"runs_needed": 1})
IOPS = "storage.rand_write_iops{job=rand_write}"
LEANING = Excuse("undecidable", IOPS,
                 f"{IOPS}: cannot decide yet after 4 soak runs, needs ≥ 9 more runs; it leans "
                 "worse (\u221256.1 % over every round, beyond the lean bound of 20 %)",
                 {"runs_needed": 9, "leans_worse": True})


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
    assert extended.data["runs_needed"] == 1


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


def test_no_extension_when_even_the_longest_could_not_decide() -> None:
    hopeless = Excuse("undecidable", BW, f"{BW}: cannot decide yet, needs ≥ 5 more runs",
                      {"runs_needed": 5})
    d = soaking(week(hopeless), 25)
    assert d.action is Action.PROMOTE and [e.kind for e in d.excuses] == ["undecidable"]


def test_a_series_that_leans_worse_extends_the_soak_even_when_the_bound_cannot_decide_it() -> None:
    d = soaking(week(LEANING), 25)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.SOAK)
    assert [e.kind for e in d.excuses] == ["soak_extended"]


def test_a_series_still_leaning_worse_at_the_bound_holds_the_candidate_for_a_person() -> None:
    runs = [*week(LEANING), soak(5, 24, LEANING), soak(6, 30.5, LEANING)]
    d = soaking(runs, 37)
    assert (d.action, d.next_run) == (Action.WAIT, None)
    assert [e.kind for e in d.excuses] == ["leaning", "awaiting_decision"]
    held, waiting = d.excuses
    assert held.subject == IOPS and "leans worse (\u221256.1 %" in held.message
    assert waiting.message == (
        f"soak complete, but 1 series leans worse and is still undecided ({IOPS}): not "
        "promoted until a person waives it or retries the candidate")
    assert blocking(d) == (held,)  # promoting by hand must waive it or force it


def test_a_waived_leaning_series_lets_the_candidate_be_promoted() -> None:
    runs = [*week(LEANING), soak(5, 24, LEANING), soak(6, 30.5, LEANING)]
    seen = apply_waivers(runs, frozenset({IOPS}))
    d = decide(CandidateState.SOAKING, seen, T0 + timedelta(hours=37), POLICY,
               soak_started_at=T0)
    assert d.action is Action.PROMOTE and d.excuses == ()


def test_without_an_extension_a_leaning_series_holds_at_once() -> None:
    policy = SoakPolicy(duration=timedelta(days=1), interval=timedelta(hours=6), min_runs=4,
                        max_extra_runs=0)
    d = decide(CandidateState.SOAKING, week(UNDECIDABLE, LEANING), T0 + timedelta(hours=25),
               policy, soak_started_at=T0)
    assert d.action is Action.WAIT
    assert [e.kind for e in d.excuses] == ["leaning", "awaiting_decision"]
