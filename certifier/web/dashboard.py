"""The dashboard: server-rendered pages over the same read services as the API, kept live by SSE.

Pages: the overview (``/``), candidates (``/candidates``, ``/candidates/{id}``), runs
(``/runs/{id}``: checks, and measurements by side and round for an A/B run), components
(``/components``, ``/components/{name}``), known-good history and diffs (``/known-good``), the
audit log (``/audit``) and webhook deliveries (``/deliveries``). Every page reads fully without
JavaScript; with it, ``live.js`` listens on ``/events`` and swaps the page's ``data-live`` parts
when the pipeline changes, ``charts.js`` draws the measurement charts, and ``actions.js`` sends the
operator actions to the API with a bearer token the user pasted.

Upstream commit titles, author names and excuse texts are untrusted: the Jinja2 environment
autoescapes everything, and the Content-Security-Policy allows scripts from this origin only
(no inline script, no eval), a second wall if an escape is ever missed. Styles may be inline
because plotly.js sets style attributes on the elements it draws.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from sqlalchemy.orm import Session

from certifier.api.deps import AppContext, ContextDep, SessionDep
from certifier.api.schemas import DB_ID_MAX
from certifier.domain.detector import as_factor, fmt_change
from certifier.domain.durations import format_duration
from certifier.domain.lifecycle import CandidateState
from certifier.limits import ID_MAX
from certifier.pipeline import read
from certifier.pipeline.errors import NotFound
from certifier.web import events
from certifier.web.assets import IMMUTABLE, Assets
from certifier.web.links import commit_url

TEMPLATES = Path(__file__).parent / "templates"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ACTIONS = ("waive", "promote", "cancel", "mark-bad", "retry", "culprit/stop")
_ACTION_PATH = re.compile(
    r"^/api/v1/candidates/\{[^}]+\}/(" + "|".join(map(re.escape, ACTIONS)) + ")$")
STATES = tuple(s.value for s in CandidateState)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def _duration(value: timedelta | None) -> str:
    return format_duration(value) if value is not None else ""


@pass_context
def _ago(context: Context, value: datetime | None) -> str:
    if value is None:
        return ""
    delta = context["now"] - value
    return "just now" if delta < timedelta(seconds=1) else f"{format_duration(delta)} ago"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4g}"


def _signed_pct(value: float | None) -> str:
    if value is None:
        return ""
    return fmt_change(value, "%") if as_factor(value) else f"{value:+.1f} %"


def _detail(detail: dict[str, Any]) -> str:
    """An audit event's detail in words: excuse messages as they are, other fields as k=v."""
    parts: list[str] = []
    for key, value in detail.items():
        if key == "excuses" and isinstance(value, list):
            parts.extend(str(e.get("message", "")) for e in value if isinstance(e, dict))
        elif isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", value):
            parts.append(f"{key}={value[:12]}")
        else:
            parts.append(f"{key}={value}")
    text = "; ".join(parts)
    return text if len(text) <= 400 else text[:399] + "…"


def _link(ref: read.CommitRef) -> str | None:
    return commit_url(ref.source, ref.repo_url, ref.sha)


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(when=_when, iso=_iso, dur=_duration, ago=_ago, num=_number,
                       pct=_signed_pct, short=lambda sha: sha[:12], detail=_detail)
    env.globals.update(commit_link=_link)
    return env


def available_actions(request: Request) -> dict[str, bool]:
    """Which operator endpoints this app serves (they arrive with the operator-actions work)."""
    found = dict.fromkeys(ACTIONS, False)
    # The published OpenAPI paths, not app.routes: FastAPI ≥ 0.165 keeps included routers as
    # opaque wrappers in app.routes. openapi() is cached and rebuilt when the routes change.
    for path, operations in request.app.openapi().get("paths", {}).items():
        match = _ACTION_PATH.match(path)
        if match and "post" in operations:
            found[match.group(1)] = True
    return found


def _chart_data(page: read.CandidatePage) -> list[dict[str, Any]]:
    """What charts.js draws: per series, the candidate's points and the known-good's band."""
    return [
        {
            "id": f"series-{i}",
            "title": s.title,
            "unit": s.unit,
            "better": s.better,
            "flagged": s.flagged,
            "x": [p.run_label for p in s.points],
            "runs": [p.run_id for p in s.points],
            "y": [p.value for p in s.points],
            "band": None if s.baseline is None else {
                "label": page.baseline_label, "n": s.baseline.n, "median": s.baseline.median,
                "q1": s.baseline.q1, "q3": s.baseline.q3, "low": s.baseline.low,
                "high": s.baseline.high,
            },
        }
        for i, s in enumerate(page.series)
    ]


def versioned_session(request: Request, context: ContextDep, session: SessionDep) -> Session:
    """The request's session, once the pipeline's version for the page's ``certifier-state``
    meta is known: read *before* the page's data, so a page never carries a version newer than
    what it shows. Read after, a change committed in between would be stamped on a page that
    does not show it, and ``live.js``, seeing that version already, would never fetch the page
    again. Read before, the worst case is one needless refresh. The page cache has usually read
    it already for this request (:class:`~certifier.web.pagecache.PageCache`); else it is read
    here."""
    if getattr(request.state, "page_version", None) is None:
        request.state.page_version = events.versioned(read.state_version(session), context)
    return session


PageSession = Annotated[Session, Depends(versioned_session)]


def create_router() -> APIRouter:
    """The dashboard router, with its own templates, assets and watcher (nothing at import)."""
    env = make_environment()
    assets = Assets()
    watcher = events.StateWatcher()
    router = APIRouter(tags=["dashboard"], include_in_schema=False)

    def render(request: Request, context: AppContext, template: str, status: int = 200,
               **values: Any) -> HTMLResponse:
        html = env.get_template(template).render(
            request=request, now=context.clock.now(), version=request.state.page_version,
            asset=assets.url, plotly_url=assets.plotly_url, **values)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def not_found(request: Request, context: AppContext, exc: NotFound) -> HTMLResponse:
        return render(request, context, "error.html", status=404, nav="",
                      message=str(exc))

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request, context: ContextDep, session: PageSession) -> HTMLResponse:
        now = context.clock.now()
        data = read.overview(session, now, context.settings.soak_policy(),
                              read.stale_after(context.settings))
        return render(request, context, "overview.html", nav="overview", o=data,
                      manifest_url=f"{request.base_url}api/v1/manifest")

    @router.get("/candidates", response_class=HTMLResponse)
    def candidates(
        request: Request, context: ContextDep, session: PageSession,
        state: str | None = Query(default=None, max_length=16),
        before: int | None = Query(default=None, ge=1, le=ID_MAX),
    ) -> HTMLResponse:
        state = state if state in STATES else None
        rows, more = read.candidate_list(session, state, before)
        return render(request, context, "candidates.html", nav="candidates",
                      rows=rows, more=more, state=state, states=STATES)

    @router.get("/candidates/{candidate_id}", response_class=HTMLResponse)
    def candidate(request: Request, candidate_id: int, context: ContextDep,
                  session: PageSession) -> HTMLResponse:
        try:
            if not 1 <= candidate_id <= ID_MAX:  # no such id can exist: never ask the database
                raise NotFound(f"no candidate {candidate_id}")
            page = read.candidate_page(session, candidate_id, context.clock.now(),
                                        context.settings.soak_policy())
        except NotFound as exc:
            return not_found(request, context, exc)
        return render(request, context, "candidate.html", nav="candidates", c=page,
                      charts=_chart_data(page), actions=available_actions(request))

    @router.get("/runs/{run_id}", response_class=HTMLResponse)
    def run(request: Request, context: ContextDep, session: PageSession,
            run_id: int = PathParam(ge=1, le=DB_ID_MAX)) -> HTMLResponse:
        try:
            page = read.run_page(session, run_id)
        except NotFound as exc:
            return not_found(request, context, exc)
        return render(request, context, "run.html", nav="candidates", p=page)

    @router.get("/components", response_class=HTMLResponse)
    def components(request: Request, context: ContextDep, session: PageSession) -> HTMLResponse:
        return render(request, context, "components.html", nav="components",
                      rows=read.component_list(session))

    @router.get("/components/{name}", response_class=HTMLResponse)
    def component(request: Request, name: str, context: ContextDep,
                  session: PageSession) -> HTMLResponse:
        try:
            page = read.component_page(session, name[:63])
        except NotFound as exc:
            return not_found(request, context, exc)
        return render(request, context, "component.html", nav="components", p=page)

    @router.get("/known-good", response_class=HTMLResponse)
    def history(request: Request, context: ContextDep, session: PageSession,
                before: int | None = Query(default=None, ge=1, le=ID_MAX)) -> HTMLResponse:
        entries, more = read.known_good_history(session, before)
        return render(request, context, "known_good.html", nav="known-good",
                      entries=entries, more=more)

    @router.get("/known-good/diff", response_class=HTMLResponse)
    def diff(
        request: Request, context: ContextDep, session: PageSession,
        a: int = Query(alias="from", ge=1, le=ID_MAX),
        b: int = Query(alias="to", ge=1, le=ID_MAX),
    ) -> HTMLResponse:
        try:
            changes = read.known_good_diff(session, a, b)
        except NotFound as exc:
            return not_found(request, context, exc)
        return render(request, context, "diff.html", nav="known-good", a=a, b=b,
                      changes=changes)

    @router.get("/audit", response_class=HTMLResponse)
    def audit(
        request: Request, context: ContextDep, session: PageSession,
        before: int | None = Query(default=None, ge=1, le=ID_MAX),
        action: str | None = Query(default=None, max_length=64),
    ) -> HTMLResponse:
        rows, more = read.audit_log(session, before, action=action or None)
        return render(request, context, "audit.html", nav="audit", rows=rows,
                      more=more, action=action or "", actions=read.audit_actions(session))

    @router.get("/deliveries", response_class=HTMLResponse)
    def deliveries(request: Request, context: ContextDep, session: PageSession,
                   before: int | None = Query(default=None, ge=1, le=ID_MAX)) -> HTMLResponse:
        rows, more, refused = read.deliveries(session, before)
        return render(request, context, "deliveries.html", nav="deliveries",
                      rows=rows, more=more, refused=refused)

    @router.get("/events")
    async def live(context: ContextDep) -> StreamingResponse:
        """Server-sent events: ``changed`` with the pipeline's version whenever it moves."""
        return StreamingResponse(
            events.stream(watcher, context), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/static/{name:path}")
    def static(name: str, request: Request) -> Response:
        asset = assets.files.get(name)
        if asset is None:
            return Response("not found", status_code=404, media_type="text/plain")
        gzipped = "gzip" in request.headers.get("accept-encoding", "")
        headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff",
                   "Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(asset.body(gzipped), media_type=asset.media_type, headers=headers)

    return router
