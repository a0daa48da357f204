"""The archive of known-good sources: each known-good's commits kept as git bundles.

A known-good is a promise that this combination can be deployed again, and upstream can break it:
a force-push takes the commit off the branch, ``git gc`` deletes it, a project is deleted. So
after a promotion the worker's reconcile pass sees a known-good commit without a bundle and sends
``certifier.archive_known_goods``, which writes, per component, a ``git bundle`` of the commit
(``<archive>/<component>/<sha>.bundle``, full history, self-contained) and pins the commit in
this machine's mirrors. A component unchanged between known-goods shares one file.
:func:`workers.checkout.ensure_commit` falls back to these bundles, so a worker with an empty
mirror deploys the known-good even when upstream no longer has it.

The archive lives in the data folder by default (``CERTIFIER_ARCHIVE_DIR`` moves it, e.g. to a
share every worker mounts). The files are the record: a bundle that exists is never written
again, and one that could not be made is tried again an hour later (its ``.failed`` note says
why). Each archived known-good is audited (``archive``), naming the worker and the bundles.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from certifier.db import models
from certifier.db.session import session_scope
from certifier.pipeline import knowngood
from workers.checkout import bundle_path, ensure_commit, pin, write_bundle
from workers.context import WorkerContext
from workers.testbed.base import InfraError

log = logging.getLogger(__name__)
RETRY_FAILED_S = 3600.0  # a bundle that could not be made is tried again after this long
BUDGET_S = 900.0  # a task stops starting new bundles after this long (its limit: 30 min)


@dataclass
class Kept:
    """What one pass did: the bundles written per version, and what could not be archived."""

    written: dict[int, dict[str, str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def _failed_recently(note: Path) -> bool:
    try:
        return time.time() - note.stat().st_mtime < RETRY_FAILED_S
    except FileNotFoundError:
        return False


def make_bundle(repos_dir: Path, archive_dir: Path, ref: knowngood.SourceRef) -> Path:
    """Write the bundle of one component commit, fetching it into the mirror if needed."""
    target = bundle_path(archive_dir, ref.name, ref.sha)
    found = ensure_commit(repos_dir, ref.name, ref.url, ref.sha, archive_dir)
    return write_bundle(found.mirror, ref.sha, target)


def _missing(ctx: WorkerContext) -> Iterator[tuple[int, knowngood.SourceRef, Path]]:
    """(version, commit, bundle) for each known-good commit this archive lacks, newest first;
    one that failed within the hour is left for later."""
    archive_dir = ctx.settings.archive_path
    with session_scope(ctx.session_factory) as session:
        wanted = knowngood.sources(session)
    for version, refs in wanted:
        for ref in refs:
            target = bundle_path(archive_dir, ref.name, ref.sha)
            if not target.is_file() and not _failed_recently(_note(target)):
                yield version, ref, target


def _note(target: Path) -> Path:
    return target.with_name(target.name + ".failed")


def missing(ctx: WorkerContext) -> bool:
    """Whether a known-good commit still lacks its bundle: cheap (a query and a ``stat`` per
    commit), so every reconcile pass asks, and sends the archive task only when it is needed."""
    return next(_missing(ctx), None) is not None


def keep_known_goods(ctx: WorkerContext, budget_s: float = BUDGET_S) -> Kept:
    """Archive every known-good commit this archive lacks, newest known-good first.

    One archiver at a time per archive folder (a lock file): a second task sent meanwhile
    returns at once instead of fetching the same commits again.
    """
    settings = ctx.settings
    kept = Kept()
    settings.archive_path.mkdir(parents=True, exist_ok=True)
    with (settings.archive_path / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return kept
        started = time.monotonic()
        for version, ref, target in _missing(ctx):
            if time.monotonic() - started > budget_s:
                break  # the next pass sends the task again
            try:
                made = make_bundle(settings.repos_dir, settings.archive_path, ref)
            except InfraError as exc:
                log.warning("cannot archive %s %s of known-good #%s: %s", ref.name, ref.sha,
                            version, exc)
                target.parent.mkdir(parents=True, exist_ok=True)
                _note(target).write_text(f"{exc}\n")
                kept.failed[f"{ref.name} {ref.sha}"] = str(exc)
                continue
            _note(target).unlink(missing_ok=True)
            with contextlib.suppress(InfraError):  # tracking's own mirror: a bonus, not a duty
                pin(settings.tracking_dir / f"{ref.name}.git", ref.sha)
            kept.written.setdefault(version, {})[ref.name] = str(made)
    return _audit(ctx, kept)


def _audit(ctx: WorkerContext, kept: Kept) -> Kept:
    if not kept.written:
        return kept
    with session_scope(ctx.session_factory) as session:
        for version, bundles in kept.written.items():
            session.add(models.AuditEvent(
                at=ctx.clock.now(), actor=f"worker:{ctx.worker_id}", action="archive",
                subject=f"known-good {version}",
                detail={"bundles": bundles,
                        "bytes": sum(Path(p).stat().st_size for p in bundles.values())}))
    return kept
