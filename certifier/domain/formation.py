"""Forming candidates: the train policy of the design brief, in its first form.

Upstreams commit daily, so a policy that restarts the soak on every new commit never promotes.
Here a candidate that is gating or soaking is never preempted; new heads wait as *one* queued
candidate that keeps absorbing later pushes (earlier queued ones are superseded: bursts
coalesce), and it boards when the active one finishes. A combination that was ever a candidate
is never formed again, so a rejected combination is not retested by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from certifier.domain.combination import Combination
from certifier.domain.lifecycle import CandidateState


@dataclass(frozen=True, slots=True)
class CandidateView:
    id: int
    state: CandidateState
    combination_hash: str


@dataclass(frozen=True, slots=True)
class FormationPlan:
    create: Combination | None  # a new queued candidate to form
    changed: tuple[str, ...]  # its changed components against the known-good
    supersede: tuple[int, ...]  # queued candidates it replaces
    board: int | None  # queued candidate that may start gating now (None: keep waiting)


def desired_combination(
    heads: Mapping[str, str],
    known_good: Mapping[str, str] | None,
    held: Mapping[str, str] | None = None,
) -> Combination | None:
    """The combination to test next: every component's newest head, except held components.

    A component with no head yet keeps its known-good commit; with neither it cannot take part,
    and no combination is formed until every configured component has a commit.
    """
    picked: dict[str, str] = dict(known_good or {})
    picked.update(heads)
    picked.update(held or {})
    if not picked:
        return None
    return Combination.of(picked)


def plan(
    desired: Combination | None,
    known_good: Combination | None,
    candidates: Iterable[CandidateView],
    required: Iterable[str] = (),
) -> FormationPlan:
    """What to do with the queue, given the combination we would like to test next."""
    cands = list(candidates)
    queued = sorted((c for c in cands if c.state is CandidateState.QUEUED), key=lambda c: c.id)
    active = [c for c in cands if c.state.is_active]
    create: Combination | None = None
    changed: tuple[str, ...] = ()
    supersede: tuple[int, ...] = ()
    seen = {c.combination_hash for c in cands}
    complete = desired is not None and all(name in desired for name in required)
    if (
        desired is not None
        and complete
        and (known_good is None or desired.hash != known_good.hash)
        and desired.hash not in seen
    ):
        create = desired
        changed = tuple(desired.changed_against(known_good))
        supersede = tuple(c.id for c in queued)
        queued = []
    board = queued[0].id if queued and not active else None
    return FormationPlan(create, changed, supersede, board)
