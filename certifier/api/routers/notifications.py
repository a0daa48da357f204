"""The outgoing-webhook delivery log (``certifier/pipeline/notify.py``), read-only.

Targets and their URLs come only from the configuration, so there is nothing to create here.
Reading needs a token of at least the ``read`` scope: the log names the receivers and repeats
their error answers, which are the operator's business, not the whole network's. A target's
URL and secret are never part of an answer; a delivery names its target by name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from certifier.api.auth import require
from certifier.api.deps import SessionDep
from certifier.api.schemas import DB_ID_MAX, ErrorOut
from certifier.db import models
from certifier.domain.notifications import DeliveryState, Event
from certifier.pipeline import notify
from certifier.pipeline.tokens import Principal, Scope

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])

ReaderDep = Annotated[Principal, Depends(require(Scope.READ))]
Id = Annotated[int, Path(ge=1, le=DB_ID_MAX)]
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no token, or an unknown, expired or revoked one"},
}


class NotificationOut(BaseModel):
    """One event for one target, and how its delivery went."""

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="also sent as X-Certifier-Delivery")
    event: Event
    subject: str
    target: str = Field(description="the target's name in the configuration")
    state: DeliveryState
    attempts: int
    last_status: int | None = Field(description="the receiver's last HTTP status, if any")
    last_error: str = Field(description="why the last attempt failed; empty once delivered")
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="when a pending one is tried next")
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: models.Notification) -> NotificationOut:
        return cls(id=row.id, event=Event(row.event), subject=row.subject, target=row.target,
                   state=DeliveryState(row.state), attempts=row.attempts,
                   last_status=row.last_status, last_error=row.last_error,
                   created_at=row.created_at, next_attempt_at=row.next_attempt_at,
                   delivered_at=row.delivered_at)


class NotificationDetail(NotificationOut):
    payload: dict[str, Any] = Field(description="what the body carries besides the delivery id")

    @classmethod
    def of(cls, row: models.Notification) -> NotificationDetail:
        return cls(**NotificationOut.of(row).model_dump(), payload=dict(row.payload))


class NotificationList(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[NotificationOut]
    next_before: int | None = Field(description="pass as ?before= for the next page")


@router.get("", response_model=NotificationList, responses=AUTH)
def list_notifications(
    session: SessionDep,
    _who: ReaderDep,
    state: DeliveryState | None = None,
    event: Event | None = None,
    target: Annotated[str | None, Query(max_length=63)] = None,
    before: Annotated[int | None, Query(ge=1, le=DB_ID_MAX,
                                        description="deliveries older than this id")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> NotificationList:
    """Outgoing webhook deliveries, newest first (read scope)."""
    rows, next_before = notify.list_deliveries(session, state=state, event=event, target=target,
                                               before=before, limit=limit)
    return NotificationList(items=[NotificationOut.of(r) for r in rows], next_before=next_before)


@router.get("/{notification_id}", response_model=NotificationDetail,
            responses={**AUTH, 404: {"model": ErrorOut}})
def get_notification(notification_id: Id, session: SessionDep,
                     _who: ReaderDep) -> NotificationDetail:
    """One delivery with its payload (read scope)."""
    return NotificationDetail.of(notify.get(session, notification_id))
