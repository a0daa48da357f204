"""Taking a component's state snapshot on a testbed, and reading the candidate's upgrade notes.

Two ways, picked per component: the recipe's ``snapshot`` hook, which prints the effective state
as ``key value`` lines (``docs/recipes.md``), or — without one — a look at the configuration-like
files under the component's state folder (hash, and the lines of small text files), so a recipe
without the hook still gets a file-level diff to read. The hook is its own executable rather than
a fourth ``resources`` action because recipes written before it exist: a ``resources`` hook that
exits 2 on an unknown action would otherwise fail every upgrade. Diffing and judging are
:mod:`certifier.domain.snapshots`' job.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

from certifier.domain.snapshots import (
    NOTES_FILE,
    FileState,
    NotesError,
    Snapshot,
    SnapshotError,
    UpgradeNote,
    parse_notes,
    parse_snapshot,
)
from workers.recipes import EXIT_INFRA, EXIT_SKIP, Deployable, Recipes

CONFIG_SUFFIXES = frozenset({".conf", ".ini", ".yaml", ".yml", ".toml", ".json", ".cfg", ".cnf",
                             ".properties", ".env"})
MAX_FILES = 200
MAX_WALKED = 20_000  # entries looked at in the state folder
MAX_HASHED_BYTES = 16 * 1024 * 1024  # a bigger file is hashed over its first 16 MiB and size
MAX_TEXT_BYTES = 256 * 1024  # the lines of smaller text files are kept for a line diff
MAX_NOTES_BYTES = 64 * 1024
MOMENTS = {"before": "before the upgrade", "after": "after the upgrade",
           "fresh": "on the fresh deployment"}


class SnapshotInfraError(Exception):
    """The snapshot hook reported a testbed problem (exit 75), not a fact about the state."""


def take(recipes: Recipes, comp: Deployable, moment: str, suite: str) -> Snapshot:
    """``comp``'s snapshot at ``moment`` (``before``, ``after`` or ``fresh``, given to the hook
    as ``CERTIFIER_SNAPSHOT``). A hook that fails or prints garbage gives a snapshot with a
    ``problem``; never raises but SnapshotInfraError (exit 75) and InfraError (cannot start)."""
    if comp.hook_path("snapshot") is None:
        return files(recipes, comp.name)
    outcomes = recipes.call(comp, "snapshot", suite=suite, check=f"snapshot {comp.name}",
                            extra_env={"CERTIFIER_SNAPSHOT": moment})
    when = MOMENTS.get(moment, moment)
    hosts = [h.name for h in recipes.bed.hosts] if comp.run_in == "hosts" else [None]
    values: dict[str, str] = {}
    for host, outcome in zip(hosts, outcomes, strict=False):
        done = outcome.result
        where = f" on {host}" if host else ""
        if done.exit_code == EXIT_INFRA and not done.timed_out:
            raise SnapshotInfraError(f"snapshot {comp.name}{where} reported a testbed problem "
                                     f"(exit {EXIT_INFRA}): {done.output_tail.strip()}")
        if done.exit_code == EXIT_SKIP and not done.timed_out:
            return files(recipes, comp.name)  # "does not apply here": what Certifier can see
        if done.timed_out or done.exit_code != 0:
            why = "timed out" if done.timed_out else f"exit {done.exit_code}"
            return Snapshot("hook", problem=f"snapshot {comp.name}{where} {when} "
                            f"failed ({why}): {done.output_tail.strip()[-500:]}")
        try:
            found = parse_snapshot(done.log)
        except SnapshotError as exc:
            return Snapshot("hook", problem=f"snapshot {comp.name}{where} {when} "
                            f"printed an unreadable snapshot: {exc}")
        values.update({f"{k}@{host}" if host else k: v for k, v in found.items()})
    return Snapshot("hook", values=values)


def files(recipes: Recipes, component: str) -> Snapshot:
    """The configuration-like files under the component's state folder, by relative path."""
    folder = recipes.state_dir(component)
    if not folder.is_relative_to(recipes.bed.state_dir.absolute()):
        return Snapshot("none", problem=f"{component}'s state folder is on the testbed's host, "
                        "not on this machine: no file-level diff without a snapshot hook")
    found: dict[str, FileState] = {}
    skipped = walked = 0
    for root, dirs, names in os.walk(folder):  # symbolic links to folders are not followed
        dirs.sort()
        walked += len(names) + len(dirs)
        if walked > MAX_WALKED:  # a data folder of a million keys is not configuration
            dirs.clear()
            skipped += 1
            continue
        for name in sorted(names):
            path = Path(root) / name
            if path.suffix.lower() not in CONFIG_SUFFIXES or path.is_symlink() \
                    or not path.is_file():
                continue
            if len(found) >= MAX_FILES:
                skipped += 1
                continue
            found[str(path.relative_to(folder))] = _file_state(path)
    problem = (f"{component}'s state folder is larger than Certifier looks through (at most "
               f"{MAX_FILES} configuration-like files among {MAX_WALKED} entries): some files "
               "not compared") if skipped else None
    return Snapshot("files", files=found, problem=problem)


def _file_state(path: Path) -> FileState:
    digest = hashlib.sha256()
    size = 0
    head = bytearray()
    try:
        with path.open("rb") as stream:
            while size < MAX_HASHED_BYTES and (block := stream.read(1 << 16)):
                digest.update(block)
                size += len(block)
                if len(head) <= MAX_TEXT_BYTES:
                    head += block
            size = max(size, os.fstat(stream.fileno()).st_size)
    except OSError as exc:
        return FileState(f"unreadable: {exc.strerror or exc}", 0)
    digest.update(str(size).encode())
    lines = None
    if size <= MAX_TEXT_BYTES and b"\x00" not in head:
        try:
            lines = tuple(bytes(head).decode("utf-8").splitlines())
        except UnicodeDecodeError:
            lines = None
    return FileState(digest.hexdigest(), size, lines)


def notes(checkout: Path) -> tuple[tuple[UpgradeNote, ...], str | None]:
    """The upgrade notes in a tree (``.certifier/upgrade-notes.yaml``) and, if the file cannot
    be read, why (shown with the diff; the notes then excuse nothing)."""
    path = checkout / NOTES_FILE
    if not path.is_file() or path.is_symlink():
        return (), None
    try:
        if path.stat().st_size > MAX_NOTES_BYTES:
            raise NotesError(f"larger than {MAX_NOTES_BYTES // 1024} KiB")
        return parse_notes(yaml.safe_load(path.read_text(encoding="utf-8"))), None
    except (NotesError, yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        text = " ".join(str(exc).split())[:300]
        return (), f"{NOTES_FILE} cannot be read, so it declares nothing: {text}"
