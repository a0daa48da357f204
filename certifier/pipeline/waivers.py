"""Waivers: a person sets aside one failing check or metric of one candidate, for a while.

The scheduler asks :func:`active_subjects` on every pass and hands the subjects to the pure policy
(``promotion.apply_waivers``), so a waiver counts from the next pass and an expired one stops
counting on its own: nothing has to clean it up. Waivers are never edited or deleted; they are
part of the candidate's history, like the audit events that record them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from certifier.db import models


def active_subjects(session: Session, candidate_id: int, now: datetime) -> frozenset[str]:
    """The excuse subjects waived for ``candidate_id`` and not expired at ``now``."""
    return frozenset(session.scalars(select(models.Waiver.subject).where(
        models.Waiver.candidate_id == candidate_id,
        or_(models.Waiver.expires_at.is_(None), models.Waiver.expires_at > now))))


def for_candidate(session: Session, candidate_id: int) -> list[models.Waiver]:
    return list(session.scalars(select(models.Waiver)
                                .where(models.Waiver.candidate_id == candidate_id)
                                .order_by(models.Waiver.id)))


def add(session: Session, candidate_id: int, subject: str, reason: str, author: str,
        now: datetime, expires_in: timedelta | None) -> models.Waiver:
    waiver = models.Waiver(candidate_id=candidate_id, subject=subject, reason=reason,
                           author=author, created_at=now,
                           expires_at=now + expires_in if expires_in is not None else None)
    session.add(waiver)
    session.flush()
    return waiver
