"""Request dependencies: the application context and the request-scoped database session.

The session commits at the boundary — after the path operation returns and *before* the response
is sent (``scope="function"``), so a client never sees a 201 for a row that then failed to
commit — and rolls back if anything raised. The session is bound to the app's dispatcher and
manifest cache (``dispatch.bind``), so the after-commit work services register (a reconcile pass,
clearing the manifest cache after a promotion or a revocation) fires on that commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from certifier.api.manifest_cache import ManifestCache
from certifier.db.session import session_scope
from certifier.domain.clock import Clock
from certifier.pipeline.dispatch import Dispatcher, bind
from certifier.pipeline.signing import Signer
from certifier.pipeline.tokens import ConfiguredToken, parse_configured
from certifier.settings import Settings


@dataclass(frozen=True, slots=True)
class AppContext:
    """What one application instance was built with; stored on ``app.state.certifier``."""

    settings: Settings
    dispatcher: Dispatcher
    clock: Clock
    session_factory: sessionmaker[Session]
    manifest_cache: ManifestCache = field(init=False)
    configured_tokens: list[ConfiguredToken] = field(init=False)
    signer: Signer = field(init=False)

    def __post_init__(self) -> None:
        # The cache keeps time by the app's clock, so tests with a fake clock see it expire.
        cache = ManifestCache(clock=lambda: self.clock.now().timestamp())
        object.__setattr__(self, "manifest_cache", cache)
        object.__setattr__(self, "configured_tokens", parse_configured(self.settings.api_tokens))
        object.__setattr__(self, "signer", Signer(self.settings.signing_key_path))


async def get_context(request: Request) -> AppContext:
    # async: a plain attribute read must not cost a threadpool hop on the hot manifest path
    return cast(AppContext, request.app.state.certifier)


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(context: ContextDep) -> Iterator[Session]:
    with session_scope(context.session_factory) as session:
        yield bind(session, context.dispatcher, context.manifest_cache.clear)


def get_clock(context: ContextDep) -> Clock:
    return context.clock


def get_dispatcher(context: ContextDep) -> Dispatcher:
    return context.dispatcher


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ClockDep = Annotated[Clock, Depends(get_clock)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
