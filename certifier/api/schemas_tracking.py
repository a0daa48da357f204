"""Response schemas of upstream tracking: webhook deliveries and per-component tracking state.

Split from :mod:`certifier.api.schemas`, which re-exports every name here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from certifier.api.schema_base import Out as _Out
from certifier.db import models


class WebhookAnswer(_Out):
    """The answer to a webhook: ``accepted`` (stored, queued), ``duplicate`` (seen before) or
    ``ignored: <reason>`` (stored in the delivery log, nothing to do)."""

    status: str
    delivery: int | None = None


class DeliveryOut(_Out):
    id: int
    source: str
    event: str
    received_at: datetime
    state: str = Field(description="pending (stored, not processed yet) or processed")
    outcome: str = Field(description="what processing did, or why the delivery was ignored")
    project: str | None
    ref: str | None
    component: str | None
    attempts: int
    replays: int = Field(description="redeliveries answered 'duplicate'")
    last_replay_at: datetime | None
    processed_at: datetime | None

    @classmethod
    def of(cls, d: models.Delivery) -> DeliveryOut:
        return cls(id=d.id, source=d.source, event=d.event, received_at=d.received_at,
                   state=d.state, outcome=d.outcome, project=d.project, ref=d.ref,
                   component=d.component.name if d.component else None, attempts=d.attempts,
                   replays=d.replays, last_replay_at=d.last_replay_at,
                   processed_at=d.processed_at)


class RejectionOut(_Out):
    """Refused deliveries (bad signature, malformed JSON…): counted, never stored."""

    source: str
    reason: str
    count: int
    last_at: datetime


class DeliveryList(_Out):
    items: list[DeliveryOut]
    rejected: list[RejectionOut]


class DeliveryDetail(DeliveryOut):
    headers: dict[str, Any]
    payload: Any


class TrackingOut(_Out):
    """How tracking sees one component: its branch head, pause, and polling health."""

    component: str
    source: str
    project: str | None
    branch: str
    head_sha: str | None
    head_seen_at: datetime | None
    head_seen_via: str | None
    paused: bool
    paused_reason: str | None
    poll_interval_s: int | None
    next_poll_at: datetime | None
    last_polled_at: datetime | None
    poll_failures: int
    last_error: str
