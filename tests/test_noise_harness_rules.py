"""When the noise harness stops driving a candidate and counts it as waiting (benchmarks/)."""

from dataclasses import replace

from benchmarks.noise_harness import BUSY_PATIENCE, _held
from certifier.domain.judgement import Excuse


def busy(runs: int) -> Excuse:
    return Excuse("infra_retry", "run 9",
                  "gating: waiting for the testbed to calm down, next try in 30s (testbed too "
                  "busy: cpu pressure 93 % (ceiling 50 %)); a busy testbed never counts against "
                  "the candidate", {"runs": list(range(runs)), "busy": True})


def test_a_candidate_waiting_for_a_person_is_held() -> None:
    assert _held([Excuse("awaiting_decision", "promotion", "…")])
    assert _held([Excuse("infra_error", "run 3", "retries exhausted")])


def test_a_busy_testbed_is_waited_for_a_few_runs_then_counted_as_waiting() -> None:
    assert not _held([busy(BUSY_PATIENCE - 1)])
    assert _held([busy(BUSY_PATIENCE)])


def test_a_candidate_still_gating_or_soaking_is_not_held() -> None:
    assert not _held([Excuse("soaking", "soak", "soaking: 1h of 7d")])
    retry = replace(busy(5), message="gating: testbed or tool error, retry 1 of 2 in 30s",
                    data={"runs": list(range(5))})
    assert not _held([retry])


def test_culprit_finding_on_a_busy_testbed_is_left_waiting_after_a_few_runs() -> None:
    def finding(busy_runs: int) -> Excuse:
        return Excuse("bisection", "culprit finding",
                      "culprit finding: step 1 of at most 16: waiting for the testbed to calm "
                      "down …", {"steps": 1, "max_steps": 16, "busy_runs": busy_runs})
    assert not _held([finding(BUSY_PATIENCE - 1)])
    assert _held([finding(BUSY_PATIENCE)])
