import pytest

from certifier.domain.lifecycle import (
    FINAL_STATES,
    TRANSITIONS,
    CandidateState,
    IllegalTransition,
    check_transition,
    reinstate,
)

S = CandidateState
LEGAL = {
    (S.QUEUED, S.GATING), (S.GATING, S.SOAKING), (S.SOAKING, S.PROMOTED),
    *((a, b) for a in (S.QUEUED, S.GATING, S.SOAKING)
      for b in (S.REJECTED, S.SUPERSEDED, S.CANCELLED)),
}


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_every_legal_transition_is_allowed(current: S, target: S) -> None:
    assert check_transition(current, target) is target


@pytest.mark.parametrize(
    ("current", "target"),
    sorted((a, b) for a in S for b in S if (a, b) not in LEGAL),
)
def test_every_other_transition_raises(current: S, target: S) -> None:
    with pytest.raises(IllegalTransition, match=f"from {current} to {target}"):
        check_transition(current, target)


def test_final_states_have_no_way_out() -> None:
    assert {s for s in S if not TRANSITIONS[s]} == FINAL_STATES
    assert all(s.is_final for s in FINAL_STATES)


def test_only_gating_and_soaking_hold_the_pipeline() -> None:
    assert {s for s in S if s.is_active} == {S.GATING, S.SOAKING}


def test_accepts_stored_strings() -> None:
    assert check_transition("queued", "gating") is S.GATING


def test_only_a_rejected_candidate_can_be_reinstated_and_it_is_queued() -> None:
    assert reinstate("rejected") is S.QUEUED
    for state in S:
        if state is not S.REJECTED:
            with pytest.raises(IllegalTransition):
                reinstate(state)
