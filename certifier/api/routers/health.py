"""Liveness and readiness probes.

``/healthz`` says the process serves requests; ``/readyz`` also asks the database, so a load
balancer stops sending traffic while the database is away. Neither touches the request session:
a failing probe must not need a working transaction to report itself.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from certifier.api.deps import ContextDep
from certifier.api.schemas import HealthOut
from certifier.pipeline import queries

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "the database does not answer"}},
)
def readyz(context: ContextDep) -> JSONResponse:
    try:
        with context.session_factory() as session:
            queries.ping(session)
    except Exception as exc:  # any failure means "not ready"; the cause goes to the log only
        # One line per failed probe: a balancer probing every second during an outage must not
        # bury the log in tracebacks.
        log.warning("readiness check failed: %s", str(exc).splitlines()[0] if str(exc) else
                    type(exc).__name__)
        return JSONResponse(
            {"status": "unavailable", "detail": "the database does not answer"}, status_code=503
        )
    return JSONResponse({"status": "ok"})
