"""Webhooks from GitLab, GitHub and Gerrit; the delivery log; per-component tracking state.

A delivery is verified, stored and committed before it is answered (the session dependency
commits before the response is sent), and its processing task is sent only after that commit.
Answers: 202 stored (``accepted``, or ``ignored: <reason>``), 200 ``duplicate``, 401 bad or
missing signature (only a counter is kept), 400 malformed JSON, 413 over 1 MiB (middleware), 503
with ``Retry-After`` when the database cannot store it: the forge redelivers (if the connection
died during the commit itself, the redelivery finds the row and is answered ``duplicate``).
A broker that is down refuses nothing: the delivery is stored, and the sweep sends it later.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from certifier.api.deps import ClockDep, ContextDep, SessionDep
from certifier.api.errors import error_body
from certifier.api.schemas import (
    DB_ID_MAX,
    DeliveryDetail,
    DeliveryList,
    DeliveryOut,
    ErrorOut,
    RejectionOut,
    TrackingOut,
    WebhookAnswer,
)
from certifier.db import models
from certifier.pipeline import components
from certifier.pipeline.errors import NotFound
from certifier.tracking import deliveries, events
from certifier.tracking.webhooks import Forge

router = APIRouter(prefix="/api/v1", tags=["tracking"])


class ForgeName(StrEnum):
    GITLAB = "gitlab"
    GITHUB = "github"
    GERRIT = "gerrit"


class DeliveryState(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"


async def raw_body(request: Request) -> bytes:
    """The exact bytes received: the GitHub signature is over them, not over parsed JSON."""
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]


@router.post(
    "/webhooks/{forge}",
    response_model=WebhookAnswer,
    status_code=202,
    responses={
        200: {"model": WebhookAnswer, "description": "a redelivery: nothing done again"},
        400: {"model": ErrorOut, "description": "the body is not a JSON object, or nests "
                                                "deeper than 64 levels"},
        401: {"model": ErrorOut, "description": "missing or invalid signature or token"},
        413: {"model": ErrorOut, "description": "body over 1 MiB"},
        503: {"model": ErrorOut, "description": "the database cannot store it now: redeliver"},
    },
)
def receive_webhook(forge: ForgeName, body: RawBody, request: Request, session: SessionDep,
                    clock: ClockDep, context: ContextDep) -> JSONResponse:
    """Store one delivery; it is processed by a worker. Gerrit: send the shared secret as
    ``X-Gerrit-Token`` or as ``?token=``."""
    name: Forge = forge.value
    headers = {k.lower(): v for k, v in request.headers.items()}
    receipt = deliveries.receive(session, name, headers, body, request.query_params.get("token"),
                                 clock, context.settings.config.tracking, os.environ)
    if receipt.dispatch and receipt.delivery_id is not None:
        deliveries.dispatch_delivery(session, context.dispatcher, receipt.delivery_id)
    if receipt.status >= 400:  # refused: the one error shape of every 4xx
        return JSONResponse(error_body(str(receipt.body.get("detail", ""))),
                            status_code=receipt.status)
    return JSONResponse(receipt.body, status_code=receipt.status)


@router.get("/deliveries", response_model=DeliveryList)
def list_deliveries(
    session: SessionDep,
    source: ForgeName | None = None,
    state: DeliveryState | None = None,
    before: Annotated[int | None, Query(ge=1, le=DB_ID_MAX,
                                        description="only ids below this (paging)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """Recent webhook deliveries, newest first, with their outcome; and the refusal counters."""
    found = deliveries.list_deliveries(session, source.value if source else None,
                                       state.value if state else None, limit, before)
    return DeliveryList(
        items=[DeliveryOut.of(d) for d in found],
        rejected=[RejectionOut(source=r.source, reason=r.reason, count=r.count, last_at=r.last_at)
                  for r in deliveries.rejections(session)])


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail,
            responses={404: {"model": ErrorOut}})
def get_delivery(delivery_id: Annotated[int, Path(ge=1, le=DB_ID_MAX)],
                 session: SessionDep) -> DeliveryDetail:
    delivery = session.scalar(select(models.Delivery).where(models.Delivery.id == delivery_id)
                              .options(selectinload(models.Delivery.component)))
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id}")
    payload: Any = json.loads(delivery.body)
    return DeliveryDetail(**DeliveryOut.of(delivery).model_dump(), headers=dict(delivery.headers),
                          payload=payload)


@router.get("/components/{name}/tracking", response_model=TrackingOut,
            responses={404: {"model": ErrorOut}})
def get_tracking(name: Annotated[str, Path(max_length=63)], session: SessionDep) -> TrackingOut:
    component = components.get_component(session, name)
    state = session.get(models.TrackingState, component.id)
    return TrackingOut(
        component=component.name, source=component.source,
        project=events.project_path(component) if component.source != "git" else None,
        branch=component.branch, head_sha=state.head_sha if state else None,
        head_seen_at=state.head_seen_at if state else None,
        head_seen_via=state.head_seen_via if state else None, paused=component.paused,
        paused_reason=component.paused_reason, poll_interval_s=component.poll_interval_s,
        next_poll_at=state.next_poll_at if state else None,
        last_polled_at=state.last_polled_at if state else None,
        poll_failures=state.poll_failures if state else 0,
        last_error=state.last_error if state else "")
