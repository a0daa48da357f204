"""Reading a candidate's ``.certifier/upgrade-notes.yaml`` from its tree: what a bad file does."""

from __future__ import annotations

from pathlib import Path

from certifier.domain.snapshots import UpgradeNote
from workers import snapshots


def _tree(tmp_path: Path, text: str) -> Path:
    (tmp_path / ".certifier").mkdir()
    (tmp_path / ".certifier" / "upgrade-notes.yaml").write_text(text)
    return tmp_path


def test_a_tree_without_notes_declares_nothing_and_says_nothing(tmp_path: Path) -> None:
    assert snapshots.notes(tmp_path) == ((), None)


def test_the_notes_of_a_tree_are_read(tmp_path: Path) -> None:
    tree = _tree(tmp_path, "upgrade:\n  - key: config.port\n    note: 8775 now.\n")
    assert snapshots.notes(tree) == ((UpgradeNote("config.port", "8775 now."),), None)


def test_a_notes_file_that_is_not_yaml_declares_nothing_and_says_why(tmp_path: Path) -> None:
    declared, problem = snapshots.notes(_tree(tmp_path, "upgrade: [\n"))
    assert declared == ()
    assert problem is not None
    assert problem.startswith(".certifier/upgrade-notes.yaml cannot be read, so it declares "
                              "nothing: ")


def test_a_note_without_a_reason_declares_nothing_and_says_why(tmp_path: Path) -> None:
    declared, problem = snapshots.notes(_tree(tmp_path, "upgrade:\n  - key: config.port\n"))
    assert declared == ()
    assert problem == (".certifier/upgrade-notes.yaml cannot be read, so it declares nothing: "
                       "note 1: `note` must say why, in words")
