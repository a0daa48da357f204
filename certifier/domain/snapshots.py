"""State snapshots around an upgrade: reading them, diffing them, and judging the diff.

A recipe's optional ``resources snapshot`` prints a component's effective state as ``key value``
lines (configuration in effect, schema version, service versions). The upgrade suite takes one
before the upgrade (after ``resources create``), one after, and the run's own fresh deployment of
the candidate gives a third. Here the text is validated, the before/after pair is diffed, and
each changed or vanished value becomes a check: failed, unless the candidate's tree declares it in
an upgrade note (``.certifier/upgrade-notes.yaml``, in the manner of the ``upgrade:`` section of
OpenStack release notes). A silent reset of an operator's value is exactly what an operator's
``verify`` rarely looks for, so Certifier looks for it itself.

Where a recipe has no snapshot hook, the suite hashes the configuration-like files under the
component's state folder instead; their diff is shown, never judged (see :func:`diff_files`).
Pure: text and plain data in, records and checks out.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

from certifier.domain.results import Check

MAX_SNAPSHOT_BYTES = 64 * 1024  # a snapshot is a summary, not a dump
MAX_KEYS = 2000
MAX_VALUE_CHARS = 1000
MAX_NOTES = 200
MAX_DIFF_LINES = 40  # changed lines kept per file
SHOWN_VALUE_CHARS = 120  # a value quoted in a check message

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@/-]{0,199}$")
NOTES_FILE = ".certifier/upgrade-notes.yaml"

Source = Literal["hook", "files", "none"]


class SnapshotError(ValueError):
    """A snapshot hook printed something that is not a list of ``key value`` lines."""


class NotesError(ValueError):
    """An upgrade-notes file that does not follow the format."""


def parse_snapshot(text: str) -> dict[str, str]:
    """The ``key value`` lines of a snapshot; blank lines and ``#`` comments are skipped.

    A key is letters, digits and ``_ . @ / -`` (``config.max_clients``); the value is the rest
    of the line, spaces kept inside (``service.version kvd 1.4``). Raises SnapshotError naming
    the first offending lines, so a recipe author sees what to fix.
    """
    if len(text.encode()) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"the snapshot is larger than {MAX_SNAPSHOT_BYTES // 1024} KiB: "
                            "print the effective values, not a dump")
    values: dict[str, str] = {}
    where: dict[str, int] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, *rest = line.split(None, 1)
        value = rest[0].strip() if rest else ""
        if not KEY.match(key):
            problems.append(f"line {number} is not `key value` (a key is letters, digits and "
                            f"_ . @ / -): {_short(line, 80)!r}")
        elif key in values:
            problems.append(f"line {number}: key {key!r} already given on line {where[key]}")
        elif len(value) > MAX_VALUE_CHARS:
            problems.append(f"line {number}: the value of {key!r} is longer than "
                            f"{MAX_VALUE_CHARS} characters")
        else:
            values[key] = value
            where[key] = number
        if len(problems) >= 3:
            break
    if problems:
        raise SnapshotError("; ".join(problems))
    if len(values) > MAX_KEYS:
        raise SnapshotError(f"{len(values)} keys: at most {MAX_KEYS}")
    return values


@dataclass(frozen=True, slots=True)
class UpgradeNote:
    """A key (or ``fnmatch`` pattern) an upgrade may change, and why (shown with the change)."""

    key: str
    note: str


def parse_notes(data: object) -> tuple[UpgradeNote, ...]:
    """Validate a loaded upgrade-notes document::

        upgrade:
          - key: config.max_clients
            note: The default connection limit is 64 now; set max_clients again to keep more.
          - keys: [schema.version, service.version]
            note: Schema v2.

    ``key`` or ``keys`` (patterns such as ``config.*`` allowed) and a non-empty ``note``.
    """
    if data is None:
        return ()
    if not isinstance(data, dict) or set(data) - {"upgrade"}:
        raise NotesError("the file must be a mapping with one section, `upgrade:`")
    entries = data.get("upgrade") or []
    if not isinstance(entries, list):
        raise NotesError("`upgrade:` must be a list of {key (or keys), note}")
    if len(entries) > MAX_NOTES:
        raise NotesError(f"{len(entries)} notes: at most {MAX_NOTES}")
    notes: list[UpgradeNote] = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or set(entry) - {"key", "keys", "note"}:
            raise NotesError(f"note {number}: expected `key` (or `keys`) and `note`")
        note = entry.get("note")
        if not isinstance(note, str) or not note.strip():
            raise NotesError(f"note {number}: `note` must say why, in words")
        keys = entry.get("keys", [entry["key"]] if "key" in entry else [])
        if not isinstance(keys, list) or not keys or not all(
                isinstance(k, str) and k.strip() for k in keys):
            raise NotesError(f"note {number}: `key` must be a key, `keys` a list of keys")
        notes += [UpgradeNote(str(k).strip(), " ".join(note.split())[:500]) for k in keys]
    return tuple(notes)


def new_notes(candidate: tuple[UpgradeNote, ...],
              known_good: tuple[UpgradeNote, ...]) -> tuple[UpgradeNote, ...]:
    """The notes the candidate brings: one already in the known-good's tree declared an earlier
    upgrade (the one that produced the known-good), and excuses nothing now — else a key noted
    once could be reset silently forever after."""
    old = set(known_good)
    return tuple(n for n in candidate if n not in old)


def note_for(key: str, notes: tuple[UpgradeNote, ...]) -> UpgradeNote | None:
    bare = key.split("@", 1)[0]  # a per-host key (run_in: hosts) matches its plain note
    return next((n for n in notes if fnmatchcase(key, n.key) or fnmatchcase(bare, n.key)), None)


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One key whose value differs before and after the upgrade; ``fresh`` is the candidate's
    value on a fresh deployment (None: not there or not taken), to tell a reset to the new
    default (after = fresh) from a value the upgrade made up."""

    key: str
    before: str | None
    after: str | None
    fresh: str | None = None
    note: str | None = None

    @property
    def kind(self) -> str:
        return "added" if self.before is None else "removed" if self.after is None else "changed"

    @property
    def judged(self) -> bool:
        """A value that vanished or changed counts; a key the new release adds is news only."""
        return self.kind != "added"

    def describe(self, component: str) -> str:
        before, after = _short(self.before or ""), _short(self.after or "")
        if self.kind == "removed":
            return f"upgrade removed {component} {self.key} (was {before})"
        if self.kind == "added":
            return f"upgrade added {component} {self.key}: {after}"
        return f"upgrade changed {component} {self.key}: {before} → {after}"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "before": self.before, "after": self.after,
                "fresh": self.fresh, "note": self.note}


@dataclass(frozen=True, slots=True)
class FileState:
    """One configuration-like file as seen in the state folder: its hash, size, and its lines
    when it is small text (None for binary or large files: hash only)."""

    sha256: str
    size: int
    lines: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class FileChange:
    path: str
    kind: str  # added, removed, changed
    before: str | None  # sha256 prefixes
    after: str | None
    diff: tuple[str, ...] = ()  # "-old line" / "+new line", at most MAX_DIFF_LINES

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "before": self.before,
                "after": self.after, "diff": list(self.diff)}


@dataclass(frozen=True, slots=True)
class StateDiff:
    """What one component's state did across the upgrade, as stored with the run."""

    component: str
    source: Source
    changes: tuple[KeyChange, ...] = ()
    files: tuple[FileChange, ...] = ()
    unchanged: int = 0
    problems: tuple[str, ...] = ()  # a snapshot that could not be taken or read
    failed_snapshot: bool = False  # the candidate's side could not be snapshot: a failed check
    notes: tuple[UpgradeNote, ...] = ()

    def checks(self, suite: str) -> list[Check]:
        """A check per changed or vanished key (failed unless declared), else one per
        component saying how many values held; file-level diffs are never checks."""
        name = f"state {self.component}"
        if self.failed_snapshot:
            return [Check(suite, name, False, "; ".join(self.problems))]
        if self.source != "hook":
            return []
        checks = []
        for change in self.changes:
            if not change.judged:
                continue
            text = change.describe(self.component)
            if change.note is None:
                checks.append(Check(suite, f"{name}/{change.key}", False,
                                    f"{text} (not declared in the candidate's upgrade notes)"))
            else:
                checks.append(Check(suite, f"{name}/{change.key}", True,
                                    f"{text}, declared in the candidate's upgrade notes: "
                                    f"{change.note}"))
        if not checks:
            added = sum(1 for c in self.changes if not c.judged)
            checks.append(Check(suite, name, True,
                                f"{self.unchanged} values unchanged across the upgrade"
                                + (f", {added} new" if added else "")))
        return checks

    def as_dict(self) -> dict[str, Any]:
        return {"component": self.component, "source": self.source,
                "changes": [c.as_dict() for c in self.changes],
                "files": [f.as_dict() for f in self.files], "unchanged": self.unchanged,
                "problems": list(self.problems)}


def diff_keys(component: str, before: dict[str, str], after: dict[str, str],
              fresh: dict[str, str] | None = None,
              notes: tuple[UpgradeNote, ...] = ()) -> StateDiff:
    """Before and after snapshots of one component, with the notes that may excuse changes."""
    fresh = fresh or {}
    changes = []
    unchanged = 0
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            unchanged += 1
            continue
        note = note_for(key, notes)
        changes.append(KeyChange(key, old, new, fresh.get(key),
                                 note.note if note is not None else None))
    return StateDiff(component, "hook", tuple(changes), unchanged=unchanged, notes=notes)


def diff_files(component: str, before: dict[str, FileState],
               after: dict[str, FileState]) -> StateDiff:
    """The configuration-like files of a component's state folder, before and after.

    Informative only: an upgrade hook replaces the packaged files it ships, so a changed file
    is the normal case, and a file on disk need not be what the service has in effect. The
    snapshot hook reports what is in effect; that is what gets judged.
    """
    files = []
    unchanged = 0
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old is not None and new is not None and old.sha256 == new.sha256:
            unchanged += 1
            continue
        kind = "added" if old is None else "removed" if new is None else "changed"
        lines: tuple[str, ...] = ()
        if old is not None and new is not None and old.lines is not None \
                and new.lines is not None:
            lines = _changed_lines(old.lines, new.lines)
        files.append(FileChange(path, kind, old.sha256[:16] if old else None,
                                new.sha256[:16] if new else None, lines))
    return StateDiff(component, "files", files=tuple(files), unchanged=unchanged)


def _changed_lines(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    found = [line for line in difflib.unified_diff(old, new, lineterm="", n=0)
             if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    if len(found) > MAX_DIFF_LINES:
        found = [*found[:MAX_DIFF_LINES], f"… {len(found) - MAX_DIFF_LINES} more changed lines"]
    return tuple(_short(line, 200) for line in found)


def _short(text: str, limit: int = SHOWN_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(slots=True)
class Snapshot:
    """One moment's snapshot of one component, as the suite took it."""

    source: Source
    values: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileState] = field(default_factory=dict)
    problem: str | None = None


def compare(component: str, before: Snapshot, after: Snapshot, fresh: Snapshot | None = None,
            notes: tuple[UpgradeNote, ...] = (), notes_problem: str | None = None) -> StateDiff:
    """The diff of one component across the upgrade, from whatever kind of snapshot it has.

    A hook snapshot that fails after the upgrade is the candidate's: the upgraded component
    cannot tell what it runs with. ``notes_problem`` (an unreadable notes file) is shown; the
    changes it might have declared then count as undeclared.
    """
    problems = tuple(p for p in (notes_problem,) if p)
    if after.problem is not None and after.source == "hook":
        return StateDiff(component, "hook", problems=(after.problem, *problems),
                         failed_snapshot=True)
    if before.source == "hook" and after.source != "hook":
        return StateDiff(component, "hook", problems=(
            f"snapshot {component} gave values before the upgrade but not after it (exit 77: "
            "nothing to snapshot)", *problems), failed_snapshot=True)
    if after.source == "hook" and before.source != "hook":
        return StateDiff(component, "none", problems=(
            f"snapshot {component} gave values after the upgrade only: nothing to compare",
            *problems))
    if before.source == "hook":
        found = diff_keys(component, before.values, after.values,
                          fresh.values if fresh is not None and fresh.source == "hook" else None,
                          notes)
    else:
        found = diff_files(component, before.files, after.files)
    extra = tuple(p for p in (before.problem, after.problem,
                              fresh.problem if fresh is not None else None) if p)
    return StateDiff(found.component, found.source, found.changes, found.files, found.unchanged,
                     (*extra, *problems), notes=found.notes)
