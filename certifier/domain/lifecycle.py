"""The candidate lifecycle: states, the legal transitions between them, and final states.

``queued → gating → soaking → promoted``; from ``queued``, ``gating`` or ``soaking`` a candidate
can also end ``rejected``, ``superseded`` or ``cancelled``. Anything else raises
:class:`IllegalTransition`, so a bug in the scheduler cannot quietly corrupt history.
"""

from __future__ import annotations

from enum import StrEnum


class CandidateState(StrEnum):
    QUEUED = "queued"
    GATING = "gating"
    SOAKING = "soaking"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        """Holds a testbed (or is about to): at most one candidate is active at a time."""
        return self in (CandidateState.GATING, CandidateState.SOAKING)


FINAL_STATES = frozenset(
    {
        CandidateState.PROMOTED,
        CandidateState.REJECTED,
        CandidateState.SUPERSEDED,
        CandidateState.CANCELLED,
    }
)

_ENDINGS = {CandidateState.REJECTED, CandidateState.SUPERSEDED, CandidateState.CANCELLED}

TRANSITIONS: dict[CandidateState, frozenset[CandidateState]] = {
    CandidateState.QUEUED: frozenset({CandidateState.GATING, *_ENDINGS}),
    CandidateState.GATING: frozenset({CandidateState.SOAKING, *_ENDINGS}),
    CandidateState.SOAKING: frozenset({CandidateState.PROMOTED, *_ENDINGS}),
    CandidateState.PROMOTED: frozenset(),
    CandidateState.REJECTED: frozenset(),
    CandidateState.SUPERSEDED: frozenset(),
    CandidateState.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    """A state change the lifecycle does not allow."""

    def __init__(self, current: CandidateState, target: CandidateState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (final state)"
        super().__init__(f"cannot move a candidate from {current} to {target}; allowed: {allowed}")
        self.current = current
        self.target = target


def reinstate(current: CandidateState | str) -> CandidateState:
    """``rejected → queued``: the one way out of a final state, taken only when people have
    waived every failure that rejected the candidate. It is kept out of :data:`TRANSITIONS` so
    the scheduler's own moves can never leave a final state."""
    cur = CandidateState(current)
    if cur is not CandidateState.REJECTED:
        raise IllegalTransition(cur, CandidateState.QUEUED)
    return CandidateState.QUEUED


def check_transition(current: CandidateState | str, target: CandidateState | str) -> CandidateState:
    """Return ``target`` as a state if ``current → target`` is legal, else raise."""
    cur = CandidateState(current)
    tgt = CandidateState(target)
    if tgt not in TRANSITIONS[cur]:
        raise IllegalTransition(cur, tgt)
    return tgt
