"""Errors services raise; the API maps each to its HTTP status, the CLI to a message."""

from __future__ import annotations


class ServiceError(Exception):
    """Base: the message is phrased for the person who made the request."""


class NotFound(ServiceError):
    pass


class Conflict(ServiceError):
    pass


class Invalid(ServiceError):
    pass
