"""The dashboard page at ``/``: the current manifest and the recent candidates.

Upstream commit titles and excuse texts are untrusted, so the Jinja2 environment autoescapes
everything, and the page is served with a Content-Security-Policy that allows no scripts at all —
a second wall if an escape is ever missed. The view is flattened into plain dicts here so the
template holds no logic beyond loops.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session

from certifier.api.deps import SessionDep
from certifier.db import models
from certifier.pipeline import knowngood, queries

TEMPLATES = Path(__file__).parent / "templates"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def make_environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _candidate_view(cand: models.Candidate) -> dict[str, Any]:
    items = {i.component.name: i.commit for i in cand.combination.items}
    changed = [
        {"name": name, "sha": items[name].sha[:12] if name in items else "",
         "title": items[name].title if name in items else ""}
        for name in sorted(str(n) for n in cand.changed)
    ]
    return {
        "id": cand.id,
        "state": cand.state,
        "base_version": cand.base_version,
        "updated_at": _when(cand.updated_at),
        "changed": changed,
        "excuses": [str(e.get("message", "")) for e in cand.excuses if isinstance(e, dict)],
        "runs": [
            {"id": r.id, "kind": r.kind, "attempt": r.attempt, "testbed": r.testbed or "",
             "outcome": r.verdict or r.state}
            for r in cand.runs
        ],
    }


def dashboard_context(session: Session) -> dict[str, Any]:
    kg = knowngood.current(session)
    manifest = knowngood.manifest(session, kg) if kg else None
    if manifest is not None and kg is not None:
        manifest["promoted_at"] = _when(kg.promoted_at)
    return {
        "manifest": manifest,
        "candidates": [_candidate_view(c) for c in queries.recent_candidates(session)],
    }


def create_router() -> APIRouter:
    """The dashboard router, with its own template environment (nothing built at import)."""
    env = make_environment()
    router = APIRouter(tags=["dashboard"])

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(session: SessionDep) -> HTMLResponse:
        html = env.get_template("index.html").render(dashboard_context(session))
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    return router
