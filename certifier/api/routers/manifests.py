"""The manifest: the current known-good (or one from history) as JSON, YAML, env lines or CSV.

Every representation carries a strong ETag derived from the document (distinct per format, as
each is its own representation); a matching ``If-None-Match`` gets a bodiless 304, so deploy
scripts can poll cheaply. ``?at=`` answers "what was known-good then", revocations included.

Every representation carries its validity inside the signed bytes: ``revoked_at``, ``issued_at``
and ``expires_at`` (``manifest.validity``, 7 days by default; the document is issued again every
half of it, see ``knowngood.issue_window``), so a saved copy stops verifying once it expires and
a revoked known-good fetched by version or with ``?at=`` says it is revoked.

Every representation is signed (Ed25519, ``certifier/pipeline/signing.py``) over exactly the
bytes served: the signature comes in the ``X-Manifest-Signature`` header and, detached, from
``/manifest.sig`` and ``/manifests/{version}.sig``. The current manifest's signature is taken
from the same cache entry as its body, so within the cache's lifetime the two always match; a
client that fetches them separately can compare ``X-Manifest-ETag`` with the body's ETag.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from certifier.api.deps import AppContext, ContextDep, SessionDep
from certifier.api.manifest_cache import Entry, ManifestFormat, Representation, answer
from certifier.api.schemas import (
    DB_ID_MAX,
    ComponentChange,
    DiffCommit,
    ErrorOut,
    Manifest,
    ManifestDiff,
    ManifestList,
    ManifestSummary,
    json_error,
)
from certifier.db import models
from certifier.db.session import session_scope
from certifier.pipeline import knowngood, read
from certifier.pipeline.errors import Invalid, NotFound

router = APIRouter(prefix="/api/v1", tags=["manifests"])

FormatQuery = Annotated[
    ManifestFormat,
    Query(alias="format", description="json (default), yaml, env (KEY=value lines), or csv "
          "(one row per component, in the manner of DLRN's versions.csv)"),
]
CSV_COLUMNS = ("component", "source_url", "branch", "sha", "commit_time", "promoted_at",
               "version", "gone_upstream", "gone_upstream_at", *knowngood.ENVELOPE)
DOCUMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/yaml": {}, "text/plain": {}, "text/csv": {}},
          "description": "the manifest, in the requested format"},
    304: {"description": "not modified (the If-None-Match ETag still matches)"},
    404: {"model": ErrorOut, "description": "no such known-good"},
}


def env_lines(document: dict[str, Any]) -> str:
    """``CERTIFIER_<NAME>_SHA=<sha>`` per component (and ``…_GONE_UPSTREAM=0|1``), safe to
    ``source`` from a shell."""
    lines = [
        f"CERTIFIER_MANIFEST_VERSION={int(document['version'])}",
        f"CERTIFIER_MANIFEST_COMBINATION={document['combination']}",
        # ISO times (digits, '-', ':', '+', 'T'): shell-safe; empty when not revoked
        *(f"CERTIFIER_MANIFEST_{key.upper()}={document.get(key) or ''}"
          for key in knowngood.ENVELOPE),
    ]
    for comp in document["components"]:
        # Component names are [a-z][a-z0-9_-]*: upper-cased with '-' as '_' they are shell-safe.
        key = str(comp["name"]).upper().replace("-", "_")
        lines.append(f"CERTIFIER_{key}_SHA={comp['sha']}")
        # 1: upstream lost the commit (deploy it from Certifier's archive); the time is ISO
        # 8601 UTC, shell-safe as it stands.
        lines.append(f"CERTIFIER_{key}_GONE_UPSTREAM={1 if comp.get('gone_upstream') else 0}")
        if comp.get("gone_upstream_at"):
            lines.append(f"CERTIFIER_{key}_GONE_UPSTREAM_AT={comp['gone_upstream_at']}")
    return "\n".join(lines) + "\n"


def csv_rows(document: dict[str, Any]) -> str:
    """One row per component, as DLRN's versions.csv lists one per package.

    A URL or a branch may begin with a character a spreadsheet takes for a formula (``=``,
    ``+``, ``-``, ``@``): such a cell gets a leading ``'``, as OWASP advises against CSV
    injection. Names, shas and times cannot begin so.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for comp in document["components"]:
        writer.writerow((comp["name"], _cell(comp["url"]), _cell(comp["branch"]), comp["sha"],
                         comp["committed_at"] or "", document["promoted_at"],
                         document["version"], "true" if comp.get("gone_upstream") else "false",
                         comp.get("gone_upstream_at") or "",
                         *(document.get(key) or "" for key in knowngood.ENVELOPE)))
    return out.getvalue()


def _cell(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def represent(document: dict[str, Any], fmt: ManifestFormat) -> Representation:
    """The bytes, media type and ETag of one format of a manifest document."""
    etag = knowngood.etag(document)
    until = datetime.fromisoformat(document["expires_at"]).timestamp()
    if fmt == "yaml":
        body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode()
        return Representation(body, "text/yaml; charset=utf-8", f'{etag[:-1]}-yaml"',
                              valid_until=until)
    if fmt == "env":
        return Representation(env_lines(document).encode(), "text/plain; charset=utf-8",
                              f'{etag[:-1]}-env"', valid_until=until)
    if fmt == "csv":
        return Representation(csv_rows(document).encode(), "text/csv; charset=utf-8",
                              f'{etag[:-1]}-csv"', valid_until=until)
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return Representation(body, "application/json", etag, valid_until=until)


def document_of(context: AppContext, session: Session, kg: models.KnownGood) -> dict[str, Any]:
    """The manifest of ``kg`` as issued now, valid for the configured time."""
    return knowngood.manifest(session, kg, context.clock.now(),
                              context.settings.config.manifest.validity)


def signed(context: AppContext, rep: Representation) -> Representation:
    return replace(rep, signature=context.signer.sign(rep.body))


def respond(request: Request, rep: Representation) -> Response:
    """The answer :func:`manifest_cache.answer` writes, as the fast path sends it."""
    status, headers, body = answer(rep, request.headers.get("if-none-match"))
    return Response(body, status_code=status,
                    headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers})


def _current(context: AppContext, fmt: ManifestFormat) -> Entry:
    with session_scope(context.session_factory) as session:
        kg = knowngood.current(session)
        if kg is None:
            return None
        return signed(context, represent(document_of(context, session, kg), fmt))


@router.get("/manifest", response_model=Manifest, responses=DOCUMENT_RESPONSES)
async def current_manifest(
    request: Request,
    context: ContextDep,
    fmt: FormatQuery = "json",
    at: Annotated[datetime | None, Query(
        description="ISO 8601 time: the known-good as it was then (UTC if no offset is given)"
    )] = None,
) -> Response:
    """The current known-good, or the one that was current at ``at``.

    The current one is served from a short-lived in-memory cache (see ``manifest_cache``): this
    is the endpoint every deploy script polls.
    """
    if at is not None:
        try:
            at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        except OverflowError:
            raise Invalid(f"time out of range: {at.isoformat()}") from None
        return respond(request, await run_in_threadpool(_at, context, at, fmt))
    entry = await context.manifest_cache.get_or_render(
        fmt, lambda: run_in_threadpool(_current, context, fmt))
    if entry is None:
        raise NotFound("no known-good yet")
    return respond(request, entry)


def _at(context: AppContext, at: datetime, fmt: ManifestFormat) -> Representation:
    with session_scope(context.session_factory) as session:
        kg = knowngood.current(session, at)
        if kg is None:
            raise NotFound(f"no known-good at {at.isoformat()}")
        return signed(context, represent(document_of(context, session, kg), fmt))


@router.get("/manifests", response_model=ManifestList)
def manifest_history(session: SessionDep) -> ManifestList:
    """Every known-good version, newest first, revoked ones included."""
    return ManifestList(items=[ManifestSummary.of(kg) for kg in knowngood.history(session)])


SIGNATURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}},
          "description": "base64 Ed25519 signature of the manifest bytes in that format"},
    404: json_error("no such known-good"),
}


def _signature(rep: Representation) -> PlainTextResponse:
    assert rep.signature is not None
    return PlainTextResponse(rep.signature + "\n", headers={
        "X-Manifest-ETag": rep.etag, "Cache-Control": "no-cache"})


@router.get("/manifest.sig", response_class=PlainTextResponse, responses=SIGNATURE_RESPONSES)
async def current_signature(context: ContextDep, fmt: FormatQuery = "json") -> Response:
    """The detached signature of the bytes ``GET /manifest`` serves now (in that format)."""
    entry = await context.manifest_cache.get_or_render(
        fmt, lambda: run_in_threadpool(_current, context, fmt))
    if entry is None:
        raise NotFound("no known-good yet")
    return _signature(entry)


@router.get("/manifests/{version}.sig", response_class=PlainTextResponse,
            responses=SIGNATURE_RESPONSES)
def version_signature(version: Annotated[int, Path(ge=1, le=DB_ID_MAX)], session: SessionDep,
                      context: ContextDep, fmt: FormatQuery = "json") -> Response:
    """The detached signature of the bytes ``GET /manifests/{version}`` serves."""
    document = document_of(context, session, knowngood.get(session, version))
    return _signature(signed(context, represent(document, fmt)))


@router.get("/signing-key", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}},
                             "description": "the Ed25519 public key, PEM"}})
@router.get("/manifest/key", response_class=PlainTextResponse, include_in_schema=False)
def signing_key(context: ContextDep) -> Response:
    """The public key that checks manifest signatures (PEM, SubjectPublicKeyInfo)."""
    return PlainTextResponse(context.signer.public_pem(),
                             headers={"Cache-Control": "max-age=300"})


@router.get("/manifests/{version}", response_model=Manifest, responses=DOCUMENT_RESPONSES)
def manifest_version(
    version: Annotated[int, Path(ge=1, le=DB_ID_MAX)],
    request: Request,
    session: SessionDep,
    context: ContextDep,
    fmt: FormatQuery = "json",
) -> Response:
    """One known-good, as issued now: a revoked one says so (``revoked_at``) in its signed
    bytes."""
    document = document_of(context, session, knowngood.get(session, version))
    return respond(request, signed(context, represent(document, fmt)))


@router.get("/manifests/{a}/diff/{b}", response_model=ManifestDiff,
            responses={404: {"model": ErrorOut, "description": "no such known-good"}})
def manifest_diff(
    a: Annotated[int, Path(ge=1, le=DB_ID_MAX)],
    b: Annotated[int, Path(ge=1, le=DB_ID_MAX)],
    session: SessionDep,
    commits: Annotated[int, Query(ge=0, le=500, description="commits listed per component")] = 50,
) -> ManifestDiff:
    """What changed from known-good ``a`` to ``b``: per component, the old and new commit and
    the commits between (either direction: from a newer to an older version lists a rollback)."""
    changes = read.known_good_diff(session, a, b, commits)
    return ManifestDiff(from_version=a, to_version=b, changed=[
        ComponentChange(
            name=c.component, from_sha=c.old.sha if c.old else None,
            to_sha=c.new.sha if c.new else None,
            commits=[DiffCommit(sha=r.sha, title=r.title, author=r.author,
                                committed_at=r.committed_at) for r in c.between],
            more=c.more)
        for c in changes])
