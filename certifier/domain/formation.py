"""Forming candidates: the train policy of the design brief, in its first form.

Upstreams commit daily, so a policy that restarts the soak on every new commit never promotes.
Here a candidate that is gating or soaking is never preempted; new heads wait as *one* queued
candidate that keeps absorbing later pushes (earlier queued ones are superseded: bursts
coalesce), and it boards when the active one finishes. A combination that was ever a candidate
is never formed again, so a rejected combination is not retested by accident; nor is one that a
person marked bad (``plan``'s ``bad``).

Culprits, in their first, simple form: a rejected candidate that changed exactly one component
blames that component's commit. While a component's head *is* a blamed commit, the next candidate
holds that component at its known-good commit, so one bad commit never blocks the others; the hold
ends as soon as a newer commit of that component arrives (it may be the fix). A rejected candidate
that changed several components names no culprit by itself, so the next candidate isolates: it
advances only one of those components on the known-good, and its verdict either blames that
component (rejected: a single change) or moves the known-good on (promoted). Either way the
pipeline keeps moving while every component commits daily.

Culprit finding (``certifier/domain/bisection.py``) replaces isolation when it names a culprit:
the next candidate holds that component at the *last good* commit bisection found (not
necessarily the known-good's), for as long as its head is one of the commits that carry the
culprit (the culprit up to the rejected candidate's commit); a newer head ends the hold. While
culprit finding runs, nothing isolates. When it is off or inconclusive, isolation is as above.

A hold at a commit that upstream no longer has (``gone``: a force-push took it off the branch) is
*released*: the component takes its head again. Holding it there would pin the train to a commit
nobody upstream can build on, and only archived known-goods can deploy it at all.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace

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
    refused_bad: str | None = None  # the desired combination, not formed: a person marked it bad


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


@dataclass(frozen=True, slots=True)
class BisectedCulprit:
    """What culprit finding concluded for a rejected candidate."""

    component: str
    culprit: str
    last_good: str
    carriers: tuple[str, ...]  # the culprit and the later commits up to the candidate's


@dataclass(frozen=True, slots=True)
class PastCandidate:
    """A finished candidate, as formation needs to know it (blame and isolation)."""

    id: int
    state: CandidateState
    combination: Mapping[str, str]
    changed: tuple[str, ...]
    base_version: int | None
    bisecting: bool = False  # culprit finding still runs for it
    bisected: BisectedCulprit | None = None  # culprit finding named a culprit


@dataclass(frozen=True, slots=True)
class Hold:
    """A component kept at its known-good commit because its head was blamed."""

    component: str
    culprit: str  # the blamed sha, the component's current head
    at: str  # the sha it is held at: the known-good's, or bisection's last good commit
    blamed_by: int  # the rejected candidate that blamed it


@dataclass(frozen=True, slots=True)
class Desired:
    combination: Combination | None
    holds: tuple[Hold, ...] = ()
    isolating: str | None = None  # the one component advanced to find a culprit
    released: tuple[Hold, ...] = ()  # holds let go: the commit they held at is gone upstream


def culprits(history: Iterable[PastCandidate]) -> dict[tuple[str, str], int]:
    """``(component, sha) → rejected candidate id`` for every commit a rejection blamed."""
    return {key: by for key, (by, _at) in _blames(history).items()}


def _blames(history: Iterable[PastCandidate]) -> dict[tuple[str, str], tuple[int, str | None]]:
    """``(component, sha) → (rejected candidate id, sha to hold at)``; ``None``: the known-good's.

    A bisected culprit blames every commit that carries it and holds at its last good commit;
    otherwise a single-component rejection blames that component's commit.
    """
    blamed: dict[tuple[str, str], tuple[int, str | None]] = {}
    for past in sorted(history, key=lambda p: p.id):
        if past.state is not CandidateState.REJECTED:
            continue
        if past.bisected is not None:
            found = past.bisected
            for sha in found.carriers:
                blamed[(found.component, sha)] = (past.id, found.last_good)
        elif len(past.changed) == 1 and past.changed[0] in past.combination:
            name = past.changed[0]
            blamed[(name, past.combination[name])] = (past.id, None)
    return blamed


def holds(
    heads: Mapping[str, str],
    known_good: Mapping[str, str] | None,
    history: Iterable[PastCandidate],
    gone: Collection[tuple[str, str]] = (),
) -> dict[str, Hold]:
    """Components whose head is a blamed commit, held at the known-good commit (or at the last
    good commit culprit finding named); a hold whose commit is in ``gone`` is left out (see
    :func:`released_holds`).

    Without a known-good there is no last good commit to hold at, so nothing is held.
    """
    return {name: hold for name, hold in _all_holds(heads, known_good, history).items()
            if (name, hold.at) not in gone}


def released_holds(
    heads: Mapping[str, str],
    known_good: Mapping[str, str] | None,
    history: Iterable[PastCandidate],
    gone: Collection[tuple[str, str]],
) -> tuple[Hold, ...]:
    """The holds :func:`holds` lets go because the commit they hold at is gone upstream."""
    return tuple(hold for name, hold in sorted(_all_holds(heads, known_good, history).items())
                 if (name, hold.at) in gone)


def _all_holds(
    heads: Mapping[str, str],
    known_good: Mapping[str, str] | None,
    history: Iterable[PastCandidate],
) -> dict[str, Hold]:
    if known_good is None:
        return {}
    blamed = _blames(history)
    held: dict[str, Hold] = {}
    for name, sha in sorted(heads.items()):
        if (name, sha) in blamed and name in known_good and known_good[name] != sha:
            by, at = blamed[(name, sha)]
            held[name] = Hold(name, sha, at or known_good[name], by)
    return held


def next_desired(
    heads: Mapping[str, str],
    known_good: Mapping[str, str] | None,
    known_good_version: int | None,
    history: Iterable[PastCandidate],
    gone: Collection[tuple[str, str]] = (),
    tried: Callable[[str], bool] | None = None,
) -> Desired:
    """The combination the train should test next: heads, minus holds, isolating if needed.

    ``gone``: ``(component, sha)`` pairs upstream no longer has; a hold at one is released.
    ``tried``: whether a combination hash was a candidate that has ended (rejected, cancelled,
    superseded: it is never formed again, so an isolation that was one is skipped for the next
    suspect); by default, whether one of ``history`` has it. An open candidate's combination is
    not tried: while it runs it stays the one desired.
    """
    past = list(history)
    held = holds(heads, known_good, past, gone)
    released = released_holds(heads, known_good, past, gone) if gone else ()
    if tried is None:
        hashes = {Combination.of(p.combination).hash for p in past}
        tried = hashes.__contains__
    return replace(_next_desired(heads, known_good, known_good_version, past, held,
                                 tried), released=released)


def _next_desired(
    heads: Mapping[str, str],
    known_good: Mapping[str, str] | None,
    known_good_version: int | None,
    past: list[PastCandidate],
    held: dict[str, Hold],
    tried: Callable[[str], bool],
) -> Desired:
    desired = desired_combination(heads, known_good, {n: h.at for n, h in held.items()})
    if desired is None or known_good is None:
        return Desired(desired, tuple(held.values()))
    on_base = [p for p in past if p.state is CandidateState.REJECTED
               and p.base_version == known_good_version]
    several = [p for p in on_base if len(p.changed) > 1]
    if not several:
        return Desired(desired, tuple(held.values()))
    latest = max(several, key=lambda p: p.id)
    if latest.bisecting or latest.bisected is not None:
        return Desired(desired, tuple(held.values()))  # culprit finding names the culprit
    if any(len(p.changed) == 1 and p.id > latest.id for p in on_base):
        return Desired(desired, tuple(held.values()))  # isolation already named a culprit
    changed_now = desired.changed_against(known_good)
    suspects = [name for name in sorted(latest.changed) if name in changed_now]
    if len(changed_now) < 2 or not suspects:
        return Desired(desired, tuple(held.values()))
    # A suspect's isolation that was already a candidate (a person cancelled it, say) is never
    # formed again, so the next suspect isolates; with none left the heads go on together,
    # rather than the train waiting for a new commit of the suspect that was tried.
    for alone in suspects:
        # Every other component at its known-good commit (one the known-good lacks keeps its
        # head).
        isolated = Combination.of({
            name: sha if name == alone or name not in known_good else known_good[name]
            for name, sha in desired.items()
        })
        if not tried(isolated.hash):
            return Desired(isolated, tuple(held.values()), alone)
    return Desired(desired, tuple(held.values()))


def plan(
    desired: Combination | None,
    known_good: Combination | None,
    candidates: Iterable[CandidateView],
    required: Iterable[str] = (),
    bad: Collection[str] = (),
) -> FormationPlan:
    """What to do with the queue, given the combination we would like to test next.

    A combination in ``bad`` (marked bad by a person) is never formed: the train waits for a
    new head, and ``refused_bad`` says why.
    """
    cands = list(candidates)
    queued = sorted((c for c in cands if c.state is CandidateState.QUEUED), key=lambda c: c.id)
    active = [c for c in cands if c.state.is_active]
    create: Combination | None = None
    changed: tuple[str, ...] = ()
    supersede: tuple[int, ...] = ()
    seen = {c.combination_hash for c in cands}
    complete = desired is not None and all(name in desired for name in required)
    refused = desired.hash if desired is not None and desired.hash in bad else None
    if (
        desired is not None
        and complete
        and refused is None
        and (known_good is None or desired.hash != known_good.hash)
        and desired.hash not in seen
    ):
        create = desired
        changed = tuple(desired.changed_against(known_good))
        supersede = tuple(c.id for c in queued)
        queued = []
    board = queued[0].id if queued and not active else None
    return FormationPlan(create, changed, supersede, board, refused)
