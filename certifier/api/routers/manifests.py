"""The manifest: the current known-good (or one from history) as JSON, YAML or env lines.

Every representation carries a strong ETag derived from the document (distinct per format, as
each is its own representation); a matching ``If-None-Match`` gets a bodiless 304, so deploy
scripts can poll cheaply. ``?at=`` answers "what was known-good then", revocations included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from certifier.api.deps import SessionDep
from certifier.api.schemas import ErrorOut, Manifest, ManifestList, ManifestSummary
from certifier.pipeline import knowngood
from certifier.pipeline.errors import Invalid, NotFound

router = APIRouter(prefix="/api/v1", tags=["manifests"])

ManifestFormat = Literal["json", "yaml", "env"]
FormatQuery = Annotated[
    ManifestFormat,
    Query(alias="format", description="json (default), yaml, or env (KEY=value lines)"),
]
DOCUMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/yaml": {}, "text/plain": {}},
          "description": "the manifest, in the requested format"},
    304: {"description": "not modified (the If-None-Match ETag still matches)"},
    404: {"model": ErrorOut, "description": "no such known-good"},
}


def env_lines(document: dict[str, Any]) -> str:
    """``CERTIFIER_<NAME>_SHA=<sha>`` per component, safe to ``source`` from a shell."""
    lines = [
        f"CERTIFIER_MANIFEST_VERSION={int(document['version'])}",
        f"CERTIFIER_MANIFEST_COMBINATION={document['combination']}",
    ]
    for comp in document["components"]:
        # Component names are [a-z][a-z0-9_-]*: upper-cased with '-' as '_' they are shell-safe.
        key = str(comp["name"]).upper().replace("-", "_")
        lines.append(f"CERTIFIER_{key}_SHA={comp['sha']}")
    return "\n".join(lines) + "\n"


def _etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison: ``W/`` prefixes are ignored (RFC 9110 13.1.2)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))


def render(request: Request, document: dict[str, Any], fmt: ManifestFormat) -> Response:
    etag = knowngood.etag(document)
    if fmt != "json":
        etag = f'{etag[:-1]}-{fmt}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if fmt == "yaml":
        body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        return Response(body, media_type="text/yaml; charset=utf-8", headers=headers)
    if fmt == "env":
        return PlainTextResponse(env_lines(document), headers=headers)
    return JSONResponse(document, headers=headers)


@router.get("/manifest", response_model=Manifest, responses=DOCUMENT_RESPONSES)
def current_manifest(
    request: Request,
    session: SessionDep,
    fmt: FormatQuery = "json",
    at: Annotated[datetime | None, Query(
        description="ISO 8601 time: the known-good as it was then (UTC if no offset is given)"
    )] = None,
) -> Response:
    """The current known-good, or the one that was current at ``at``."""
    if at is not None:
        try:
            at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        except OverflowError:
            raise Invalid(f"time out of range: {at.isoformat()}") from None
    kg = knowngood.current(session, at)
    if kg is None:
        raise NotFound("no known-good yet" if at is None else f"no known-good at {at.isoformat()}")
    return render(request, knowngood.manifest(session, kg), fmt)


@router.get("/manifests", response_model=ManifestList)
def manifest_history(session: SessionDep) -> ManifestList:
    """Every known-good version, newest first, revoked ones included."""
    return ManifestList(items=[ManifestSummary.of(kg) for kg in knowngood.history(session)])


@router.get("/manifests/{version}", response_model=Manifest, responses=DOCUMENT_RESPONSES)
def manifest_version(
    version: Annotated[int, Path(ge=1)],
    request: Request,
    session: SessionDep,
    fmt: FormatQuery = "json",
) -> Response:
    return render(request, knowngood.manifest(session, knowngood.get(session, version)), fmt)
