"""Reaping what dead testbed owners left behind: processes, namespaces and records.

A worker that is SIGKILLed (OOM killer, a deploy, a power cut of the container) cannot run its
teardown. The next worker calls :func:`reap` at start: every record whose owner process is gone
is torn down from the record alone, and every ``cf-<tag>-<host>`` namespace that no live record
claims is deleted. Processes are found by the testbed's environment cookie, never by name, and
namespaces outside the ``cf-`` prefix are never touched — unlike Mininet's ``mn -c``, which kills
by name pattern and has taken unrelated processes with it.

Records are read *after* namespaces are listed: a creator writes its record before its first
namespace, so a namespace we see has a record we will see, and a testbed being built right now
is never mistaken for an orphan.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection
from pathlib import Path

from workers.testbed import records
from workers.testbed.base import TAG_RE, TestbedError
from workers.testbed.netns import PREFIX, destroy_namespaces, list_namespaces
from workers.testbed.process import InfraError, kill_pids, pids_with_cookie

log = logging.getLogger(__name__)

OUR_NAMESPACE = re.compile(rf"^{PREFIX}([a-z0-9]{{1,12}})-([a-z][a-z0-9]{{0,7}})$")


def _can_manage_namespaces() -> bool:
    """Only root can have created (or can delete) namespaces."""
    return os.geteuid() == 0


def _tag_of(namespace: str) -> str | None:
    match = OUR_NAMESPACE.match(namespace)
    return match.group(1) if match else None


def destroy(record: records.Record, records_dir: Path) -> list[str]:
    """Tear down the testbed ``record`` describes; returns what was removed.

    Raises InfraError (and keeps the record, so a later pass retries) when a namespace will
    not go away.
    """
    removed = [f"pid {pid}" for pid in kill_pids(pids_with_cookie(record.cookie))]
    # Trust the record only as far as our own naming goes.
    ours = [n for n in record.namespaces if _tag_of(n) == record.tag]
    if ours and _can_manage_namespaces():
        removed += destroy_namespaces(ours)
    records.remove(records_dir, record.tag)
    removed.append(f"record {record.tag}")
    return removed


def clear_tag(records_dir: Path, tag: str) -> list[str]:
    """Make ``tag`` usable: reap a dead owner's leftovers, refuse if a live owner holds it."""
    record = records.read(records.path_for(records_dir, tag))
    if record is None:
        return []
    if record.owner_alive():
        raise TestbedError(f"testbed tag {tag!r} is in use by live process {record.owner_pid}")
    log.warning("reaping leftovers of testbed tag %s (owner pid %s is gone)", tag,
                record.owner_pid)
    return destroy(record, records_dir)


def reap(records_dir: Path, *, stale_tags: Collection[str] = (),
         orphan_tags: Collection[str] | None = None) -> list[str]:
    """Tear down testbeds of dead owners (and those in ``stale_tags``) and orphan namespaces.

    A worker owns the whole ``cf-`` prefix on its machine and passes no ``orphan_tags``; tests
    on a machine shared with other testbeds pass the tags they made, so only their own orphans
    are deleted. Returns what was removed: namespace names, ``pid N`` and ``record TAG``
    entries. Problems with one testbed are logged and do not stop the others from being reaped.
    """
    bad_tags = [t for t in stale_tags if not TAG_RE.match(t)]
    if bad_tags:
        raise TestbedError(f"not testbed tags: {bad_tags}")
    namespaces: list[str] = []
    if _can_manage_namespaces():
        try:
            namespaces = list_namespaces()
        except InfraError as exc:  # no `ip`: there can be no namespaces of ours either
            log.error("janitor cannot list namespaces: %s", exc)
    removed: list[str] = []
    live: set[str] = set()
    for path, record in records.read_all(records_dir).items():
        if record is None:
            log.warning("removing unreadable testbed record %s", path)
            path.unlink(missing_ok=True)
            continue
        if record.owner_alive() and record.tag not in stale_tags:
            live.add(record.tag)
            continue
        try:
            removed += destroy(record, records_dir)
        except InfraError as exc:
            live.add(record.tag)  # its namespaces are being handled; do not fight over them
            log.error("could not reap testbed tag %s: %s", record.tag, exc)
    orphans = [n for n in namespaces
               if (tag := _tag_of(n)) is not None and tag not in live and n not in removed
               and (orphan_tags is None or tag in orphan_tags)]
    for name in orphans:
        try:
            removed += destroy_namespaces([name])
        except InfraError as exc:
            log.error("could not delete orphan namespace %s: %s", name, exc)
    if removed:
        log.warning("janitor removed: %s", ", ".join(removed))
    return removed
