"""A person's retry restarts the infra-error streak, and a hold at a vanished commit is let go."""

from datetime import UTC, datetime, timedelta

from certifier.domain.combination import Combination
from certifier.domain.formation import BisectedCulprit, PastCandidate, next_desired
from certifier.domain.judgement import Excuse, RunKind, Verdict
from certifier.domain.lifecycle import CandidateState
from certifier.domain.promotion import Action, RunSummary, SoakPolicy, decide

T0 = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = SoakPolicy(duration=timedelta(days=7), interval=timedelta(hours=6), min_runs=2,
                    max_infra_retries=2, infra_backoff=timedelta(seconds=30))
A, B, C = "a" * 40, "b" * 40, "c" * 40


def _infra(i: int, kind: RunKind, minutes: int) -> RunSummary:
    at = T0 + timedelta(minutes=minutes)
    return RunSummary(i, kind, Verdict.INFRA_ERROR, at, at,
                      (Excuse("infra_error", f"run {i}", "commit abc is not in /srv/app"),))


def _exhausted_gate() -> list[RunSummary]:
    return [_infra(i, RunKind.GATE, i) for i in (1, 2, 3)]


def test_exhausted_infra_retries_wait_for_an_operator() -> None:
    d = decide(CandidateState.GATING, _exhausted_gate(), T0 + timedelta(hours=1), POLICY)
    assert (d.action, d.next_run) == (Action.WAIT, None)
    assert [e.kind for e in d.excuses] == ["infra_error"]
    assert "then retry it" in d.excuses[0].message


def test_a_retry_restarts_the_streak_and_asks_for_a_gate_run_at_once() -> None:
    retried = T0 + timedelta(hours=1)
    d = decide(CandidateState.GATING, _exhausted_gate(), retried, POLICY, retried_at=retried)
    assert (d.action, d.next_run) == (Action.WAIT, RunKind.GATE)
    assert [e.kind for e in d.excuses] == ["gating"]


def test_after_a_retry_a_new_infra_error_backs_off_as_the_first_one_did() -> None:
    retried = T0 + timedelta(hours=1)
    runs = [*_exhausted_gate(), _infra(4, RunKind.GATE, 61)]
    d = decide(CandidateState.GATING, runs, T0 + timedelta(minutes=61), POLICY,
               retried_at=retried)
    assert d.next_run is None
    assert [e.kind for e in d.excuses] == ["infra_retry"]
    assert "retry 1 of 2" in d.excuses[0].message


def test_a_retry_also_restarts_the_streak_of_a_soak() -> None:
    gate = RunSummary(1, RunKind.GATE, Verdict.PASSED, T0, T0)
    soak = [_infra(i, RunKind.SOAK, i) for i in (2, 3, 4)]
    now = T0 + timedelta(hours=1)
    stuck = decide(CandidateState.SOAKING, [gate, *soak], now, POLICY, T0)
    assert stuck.next_run is None and "infra_error" in [e.kind for e in stuck.excuses]
    retried = decide(CandidateState.SOAKING, [gate, *soak], now, POLICY, T0, retried_at=now)
    assert retried.next_run is RunKind.SOAK
    assert "infra_error" not in [e.kind for e in retried.excuses]


KG = Combination.of({"nova": A, "neutron": A})


def _blamed_neutron() -> list[PastCandidate]:
    """Candidate 6 moved only neutron, to B, and was rejected: B is blamed."""
    return [PastCandidate(6, CandidateState.REJECTED, {"nova": A, "neutron": B}, ("neutron",), 1)]


def test_a_hold_at_a_commit_upstream_still_has_stays() -> None:
    wanted = next_desired({"nova": C, "neutron": B}, KG, 1, _blamed_neutron())
    assert [(h.component, h.at) for h in wanted.holds] == [("neutron", A)]
    assert wanted.released == ()
    assert wanted.combination == Combination.of({"nova": C, "neutron": A})


def test_a_hold_at_a_commit_gone_upstream_is_released_and_says_which() -> None:
    wanted = next_desired({"nova": C, "neutron": B}, KG, 1, _blamed_neutron(),
                          gone={("neutron", A)})
    assert wanted.holds == ()
    assert [(h.component, h.culprit, h.at, h.blamed_by) for h in wanted.released] == [
        ("neutron", B, A, 6)]
    assert wanted.combination == Combination.of({"nova": C, "neutron": B})


def test_a_bisected_last_good_commit_gone_upstream_releases_its_hold() -> None:
    past = [PastCandidate(7, CandidateState.REJECTED, {"nova": B, "neutron": C},
                          ("neutron", "nova"), 1,
                          bisected=BisectedCulprit("neutron", C, B, (C,)))]
    kept = next_desired({"nova": B, "neutron": C}, KG, 1, past, gone={("neutron", A)})
    assert [(h.component, h.at) for h in kept.holds] == [("neutron", B)]
    released = next_desired({"nova": B, "neutron": C}, KG, 1, past, gone={("neutron", B)})
    assert released.holds == () and [h.at for h in released.released] == [B]
