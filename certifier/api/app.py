"""The application factory: :func:`create_app` builds one FastAPI app from one Settings object.

Everything the app needs — settings, dispatcher, clock, session factory — is passed in and kept
on ``app.state``; nothing is created at import time, so tests build as many apps as they like,
each on its own database, and the CLI builds the real one with the Celery dispatcher.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import certifier
from certifier.api import accesslog, openapi
from certifier.api.deps import AppContext
from certifier.api.errors import (
    MAX_BODY_BYTES,
    BodySizeLimit,
    JsonDepthLimit,
    RefuseNul,
    install_error_handlers,
)
from certifier.api.manifest_cache import ManifestFastPath
from certifier.api.routers import (
    actions,
    candidates,
    components,
    health,
    holds,
    manifests,
    metrics,
    notifications,
    testbeds,
    webhooks,
)
from certifier.db.session import make_engine, make_session_factory
from certifier.domain.clock import Clock, SystemClock
from certifier.pipeline.dispatch import Dispatcher
from certifier.settings import Settings
from certifier.web import dashboard
from certifier.web.pagecache import PageCache

DESCRIPTION = (
    "Certifies combinations of upstream commits: tracks components and their commits, gates "
    "and soaks candidates on testbeds, and publishes the known-good manifest."
)


def create_app(
    settings: Settings,
    *,
    dispatcher: Dispatcher,
    clock: Clock | None = None,
    session_factory: sessionmaker[Session] | None = None,
) -> FastAPI:
    """Build the API and dashboard.

    Without ``session_factory`` the app opens its own engine on the settings' database and
    disposes of it at shutdown; a factory passed in belongs to the caller.
    """
    owned_engine: Engine | None = None
    if session_factory is None:
        owned_engine = make_engine(settings.resolved_database_url)
        session_factory = make_session_factory(owned_engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned_engine is not None:
            owned_engine.dispose()

    app = FastAPI(
        title="Certifier",
        version=getattr(certifier, "__version__", "0.1.0"),
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
        # No trailing-slash redirects: Starlette builds them from the Host header, which a
        # client chooses, so a redirect would send the client wherever it said.
        redirect_slashes=False,
    )
    app.state.certifier = context = AppContext(
        settings=settings,
        dispatcher=dispatcher,
        clock=clock or SystemClock(),
        session_factory=session_factory,
    )
    install_error_handlers(app)
    openapi.install(app)
    accesslog.install()  # Gerrit's ?token= secret must never reach uvicorn's access log
    app.add_middleware(JsonDepthLimit)  # inside BodySizeLimit: it reads at most the limit
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(RefuseNul)
    app.add_middleware(PageCache, context=context)  # dashboard pages, until the pipeline moves
    app.add_middleware(ManifestFastPath, cache=context.manifest_cache)  # outermost: the hot path
    for module in (health, metrics, components, candidates, manifests, testbeds, webhooks,
                   holds, actions, notifications):
        app.include_router(module.router)
    app.include_router(dashboard.create_router())
    return app
