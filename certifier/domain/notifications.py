"""Outgoing notifications, the pure part: the events, the signed body, and when to try again.

A receiver must be able to trust what it gets and to make sense of a late retry, so the rules
that decide both live here, free of the database and the network (``certifier/pipeline/notify.py``
does the storing and the sending):

* the body is canonical JSON (sorted keys, no spaces), so the bytes signed are the bytes sent,
  and the same delivery is byte-identical on every attempt;
* the signature is ``sha256=<hex>``, an HMAC-SHA256 of exactly those bytes, the form GitHub uses,
  so receivers can reuse the verification code they already have;
* a failed attempt is retried after ``backoff * 2**(attempt-1)`` (at most ``backoff_max``), and
  after ``max_attempts`` attempts the delivery is given up as failed: a receiver that is down for
  a while is not hammered, and one that is gone for good does not grow the log forever.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Event(StrEnum):
    """What Certifier tells the outside world about."""

    PROMOTED = "promoted"  # a candidate became the next known-good
    REJECTED = "rejected"  # a candidate was rejected, with its excuses
    REGRESSED = "regressed"  # …and one of the excuses is a regression found by the numbers
    REVOKED = "revoked"  # a person revoked a known-good


ALL_EVENTS: tuple[Event, ...] = tuple(Event)


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting for its first attempt or for a retry
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: max_attempts used, or the target is no longer configured


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff: timedelta = timedelta(seconds=30)
    backoff_max: timedelta = timedelta(hours=1)

    def delay(self, attempts: int) -> timedelta:
        """How long to wait after attempt number ``attempts`` (1 = the first) failed."""
        factor: int = 2 ** min(max(attempts, 1) - 1, 30)  # capped exponent: no overflow
        delay: timedelta = min(self.backoff * factor, self.backoff_max)
        return delay


@dataclass(frozen=True, slots=True)
class NextStep:
    """Where a delivery stands after an attempt: its state and, while pending, when to retry."""

    state: DeliveryState
    next_attempt_at: datetime | None


def accepted(status: int | None) -> bool:
    """Only a 2xx answer counts as delivered; redirects are not followed (the URL is the
    operator's, and a redirect could point the signed body anywhere)."""
    return status is not None and 200 <= status < 300


def after_attempt(policy: RetryPolicy, attempts: int, status: int | None,
                  now: datetime) -> NextStep:
    """The outcome of attempt number ``attempts`` that got ``status`` (None: no answer)."""
    if accepted(status):
        return NextStep(DeliveryState.DELIVERED, None)
    if attempts >= policy.max_attempts:
        return NextStep(DeliveryState.FAILED, None)
    return NextStep(DeliveryState.PENDING, now + policy.delay(attempts))


def body(delivery_id: int, payload: Mapping[str, Any]) -> bytes:
    """The exact bytes POSTed: the payload plus the delivery id, as canonical JSON.

    The id is inside the signed bytes (not only in a header), so a receiver that deduplicates
    by it cannot be fooled by a replayed body with another id.
    """
    document = {**payload, "delivery": delivery_id}
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def signature(secret: bytes, data: bytes) -> str:
    """The ``X-Certifier-Signature`` header value for ``data``."""
    return "sha256=" + hmac.new(secret, data, hashlib.sha256).hexdigest()
