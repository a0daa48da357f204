from certifier.domain.combination import Combination
from certifier.domain.formation import (
    BisectedCulprit,
    CandidateView,
    PastCandidate,
    culprits,
    desired_combination,
    next_desired,
    plan,
)
from certifier.domain.lifecycle import CandidateState

A, B, C = "a" * 40, "b" * 40, "c" * 40
S = CandidateState


def test_first_combination_takes_every_head_and_waits_for_all_components() -> None:
    assert plan(desired_combination({"nova": A}, None), None, [], ["nova", "neutron"]).create \
        is None
    p = plan(desired_combination({"nova": A, "neutron": B}, None), None, [], ["nova", "neutron"])
    assert p.create == Combination.of({"nova": A, "neutron": B})
    assert p.changed == ("neutron", "nova")


def test_heads_equal_to_known_good_form_nothing() -> None:
    kg = Combination.of({"nova": A})
    assert plan(desired_combination({"nova": A}, kg), kg, []).create is None


def test_new_head_is_combined_with_the_known_good() -> None:
    kg = Combination.of({"nova": A, "neutron": A})
    p = plan(desired_combination({"neutron": B}, kg), kg, [])
    assert p.create == Combination.of({"nova": A, "neutron": B})
    assert p.changed == ("neutron",)


def test_a_combination_is_never_formed_twice() -> None:
    combo = Combination.of({"nova": B})
    rejected = CandidateView(7, S.REJECTED, combo.hash)
    assert plan(combo, None, [rejected]).create is None


def test_soaking_candidate_is_not_preempted_and_new_heads_queue() -> None:
    soaking = CandidateView(1, S.SOAKING, Combination.of({"nova": A}).hash)
    p = plan(Combination.of({"nova": B}), None, [soaking])
    assert p.create == Combination.of({"nova": B})
    assert p.supersede == ()
    assert p.board is None


def test_bursts_coalesce_into_one_queued_candidate() -> None:
    soaking = CandidateView(1, S.SOAKING, Combination.of({"nova": A}).hash)
    queued = CandidateView(2, S.QUEUED, Combination.of({"nova": B}).hash)
    p = plan(Combination.of({"nova": C}), None, [soaking, queued])
    assert p.create == Combination.of({"nova": C})
    assert p.supersede == (2,)


def test_queued_candidate_boards_when_nothing_is_active() -> None:
    queued = CandidateView(2, S.QUEUED, Combination.of({"nova": B}).hash)
    assert plan(Combination.of({"nova": B}), None, [queued]).board == 2


def test_held_component_stays_at_its_last_good_commit() -> None:
    kg = Combination.of({"nova": A, "neutron": A})
    combo = desired_combination({"nova": B, "neutron": C}, kg, held={"neutron": A})
    assert combo == Combination.of({"nova": B, "neutron": A})


# Culprit finding's conclusions (certifier/domain/bisection.py) in formation ------------------

D, E = "d" * 40, "e" * 40
KG3 = Combination.of({"nova": A, "neutron": A, "cinder": A})


def _bisected(bisecting: bool = False, found: bool = True) -> list[PastCandidate]:
    """Candidate 6 moved every component (neutron A → B → C → D) and was rejected; culprit
    finding blamed neutron C, last good B."""
    culprit = BisectedCulprit("neutron", C, B, (C, D)) if found else None
    return [PastCandidate(6, S.REJECTED, {"nova": B, "neutron": D, "cinder": B},
                          ("cinder", "neutron", "nova"), 1, bisecting, culprit)]


def test_a_bisected_culprit_holds_its_component_at_the_last_good_commit() -> None:
    wanted = next_desired({"nova": B, "neutron": D, "cinder": B}, KG3, 1, _bisected())
    assert wanted.isolating is None
    assert wanted.combination == Combination.of({"nova": B, "neutron": B, "cinder": B})
    assert [(h.component, h.culprit, h.at, h.blamed_by) for h in wanted.holds] == [
        ("neutron", D, B, 6)]
    assert culprits(_bisected()) == {("neutron", C): 6, ("neutron", D): 6}


def test_the_hold_ends_when_a_head_newer_than_the_rejected_commit_arrives() -> None:
    wanted = next_desired({"nova": B, "neutron": E, "cinder": B}, KG3, 1, _bisected())
    assert wanted.holds == ()
    assert wanted.combination == Combination.of({"nova": B, "neutron": E, "cinder": B})


def test_nothing_isolates_while_culprit_finding_runs() -> None:
    heads = {"nova": B, "neutron": D, "cinder": B}
    running = next_desired(heads, KG3, 1, _bisected(bisecting=True, found=False))
    assert running.isolating is None and running.combination == Combination.of(heads)
    inconclusive = next_desired(heads, KG3, 1, _bisected(found=False))
    assert inconclusive.isolating == "cinder"  # no culprit named: isolation as before


def test_an_isolation_already_tried_moves_on_instead_of_stalling_the_train() -> None:
    # seen in the noise harness: the isolation candidate of an inconclusive culprit finding was
    # cancelled, and with that combination never formed again no candidate was formed at all
    heads = {"nova": B, "neutron": D, "cinder": B}
    rejected = _bisected(found=False)
    cinder_alone = {"nova": A, "neutron": A, "cinder": B}
    cancelled = PastCandidate(7, S.CANCELLED, cinder_alone, ("cinder",), 1)
    wanted = next_desired(heads, KG3, 1, [*rejected, cancelled])
    assert wanted.isolating == "neutron"
    assert wanted.combination == Combination.of({"nova": A, "neutron": D, "cinder": A})
    every = [cancelled, *(PastCandidate(8 + i, S.CANCELLED, combo, (name,), 1)
                          for i, (name, combo) in enumerate((
                              ("neutron", {"nova": A, "neutron": D, "cinder": A}),
                              ("nova", {"nova": B, "neutron": A, "cinder": A}))))]
    moved_on = next_desired(heads, KG3, 1, [*rejected, *every])
    assert moved_on.isolating is None and moved_on.combination == Combination.of(heads)
