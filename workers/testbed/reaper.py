"""Reaping what dead testbed owners left behind: processes, mounts, loop devices, links,
namespaces, remote folders and records.

A worker that is SIGKILLed (OOM killer, a deploy, a power cut of the container) cannot run its
teardown. The next worker calls :func:`reap` at start: every record whose owner process is gone
is torn down from the record alone, and every ``cf-`` object of this instance's run tags that
no live record claims is deleted — ``cf-<tag>-<host>`` namespaces, ``cf-<tag>`` links in the
root namespace and loop devices backed by ``cf-scratch-<tag>.img``. Processes are found by the
testbed's environment cookie, never by name, and nothing outside the ``cf-`` prefix is ever
touched — unlike Mininet's ``mn -c``, which kills by name pattern and has taken unrelated
processes with it.

Workers that stay up use the same pieces (``workers/janitor.py``): :func:`reap_dead` on every
reconcile pass, and :func:`reap` with the previous holder's tags right after a claim.

Each driver removes its own objects (``Testbed.reap`` and the drivers' overrides: namespaces and
links for ``netns``, remote folders for ``ssh``); this module only reads the records, scans the
host and picks what is orphaned.

Records are read *after* the host is scanned: a creator writes its record before its first
object, so an object we see has a record we will see, and a testbed being built right now is
never mistaken for an orphan.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from workers.testbed import records, scratch
from workers.testbed.base import TAG_RE, Testbed, TestbedError
from workers.testbed.local import LocalTestbed
from workers.testbed.netns import NetnsTestbed
from workers.testbed.process import CommandResult, InfraError, execute
from workers.testbed.ssh import SshTestbed

log = logging.getLogger(__name__)

LOCAL_TIMEOUT = 30.0
DRIVERS: dict[str, type[Testbed]] = {
    driver.driver: driver for driver in (NetnsTestbed, SshTestbed, LocalTestbed)}


def _can_manage_namespaces() -> bool:
    """Only root can have created (or can delete) namespaces, mounts and loop devices."""
    return os.geteuid() == 0


def _local(argv: list[str]) -> CommandResult:
    return execute(argv, timeout=LOCAL_TIMEOUT)


def destroy(record: records.Record, records_dir: Path) -> list[str]:
    """Tear down the testbed ``record`` describes, by its driver's ``reap``; returns what was
    removed.

    Raises InfraError (and keeps the record, so a later pass retries) when something will not
    go away.
    """
    removed = DRIVERS.get(record.driver, Testbed).reap(record)
    records.remove(records_dir, record.tag)
    removed.append(f"record {record.tag}")
    return removed


def reap_dead(records_dir: Path) -> list[str]:
    """Tear down the testbeds whose owner process is gone, from their records alone.

    The cheap half of :func:`reap`: no scan of the host for orphan objects, so a worker can do
    it on every reconcile pass. That is what cleans up after a run whose process died (killed
    at its time limit, by the OOM killer) while the worker itself lives on. A testbed that will
    not go away keeps its record and is tried again next time.
    """
    removed: list[str] = []
    for record in records.read_all(records_dir).values():
        if record is None or record.owner_alive():
            continue
        try:
            removed += destroy(record, records_dir)
        except InfraError as exc:
            log.error("could not reap testbed tag %s: %s", record.tag, exc)
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


def _scratch_loops() -> list[tuple[str, str]]:
    """(loop device, backing image) for every loop device backed by one of our images."""
    done = _local(["losetup", "-J", "-l"])
    if not done.ok or not done.stdout.strip():
        return []
    try:
        devices = json.loads(done.stdout).get("loopdevices", [])
    except ValueError:
        return []
    found = []
    for dev in devices:
        back = str(dev.get("back-file") or "").removesuffix(" (deleted)")
        if scratch.IMAGE_RE.match(PurePosixPath(back).name):
            found.append((str(dev.get("name")), back))
    return found


def _reap_orphans(live: set[str], orphan_tags: Collection[str] | None, owned_prefix: str,
                  removed: list[str], namespaces: list[str], links: list[str],
                  loops: list[tuple[str, str]]) -> None:
    def orphan(tag: str | None) -> bool:
        return (tag is not None and tag.startswith(owned_prefix) and tag not in live
                and (orphan_tags is None or tag in orphan_tags))

    for device, image in loops:
        match = scratch.IMAGE_RE.match(PurePosixPath(image).name)
        if match and orphan(match.group(1)):
            try:
                removed += scratch.release(_local, PurePosixPath(image))
            except (InfraError, ValueError) as exc:
                log.error("could not release orphan loop device %s (%s): %s", device, image, exc)
    NetnsTestbed.reap_orphans(namespaces, links, orphan, removed)


def reap(records_dir: Path, *, stale_tags: Collection[str] = (),
         orphan_tags: Collection[str] | None = None, owned_prefix: str = "") -> list[str]:
    """Tear down testbeds of dead owners (and those in ``stale_tags``) and orphan objects.

    Records in ``records_dir`` are this instance's own. Objects without a record are orphans
    only if their tag starts with ``owned_prefix``: a worker passes its instance's run-tag
    prefix, so several Certifier instances (a demo, a test run, production) can share a machine
    without reaping each other's live testbeds; tests pass the ``orphan_tags`` they made.
    Returns what was removed: namespace names, ``link …``, ``mount …``,
    ``loop …``, ``remote …``, ``pid N`` and ``record TAG`` entries. Problems with one testbed
    are logged and do not stop the others from being reaped.
    """
    bad_tags = [t for t in stale_tags if not TAG_RE.match(t)]
    if bad_tags:
        raise TestbedError(f"not testbed tags: {bad_tags}")
    namespaces: list[str] = []
    links: list[str] = []
    loops: list[tuple[str, str]] = []
    if _can_manage_namespaces():
        try:
            namespaces, links = NetnsTestbed.leftovers()
            loops = _scratch_loops()
        except InfraError as exc:  # no `ip`: there can be no namespaces of ours either
            log.error("janitor cannot list namespaces, links or loop devices: %s", exc)
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
            live.add(record.tag)  # its objects are being handled; do not fight over them
            log.error("could not reap testbed tag %s: %s", record.tag, exc)
    _reap_orphans(live, orphan_tags, owned_prefix, removed, namespaces, links, loops)
    if removed:
        log.warning("janitor removed: %s", ", ".join(removed))
    return removed
