"""Snapshots across an upgrade: reading ``key value`` lines and upgrade notes, judging the diff."""

from __future__ import annotations

import pytest

from certifier.domain.snapshots import (
    MAX_SNAPSHOT_BYTES,
    FileState,
    NotesError,
    Snapshot,
    SnapshotError,
    UpgradeNote,
    compare,
    diff_files,
    diff_keys,
    new_notes,
    parse_notes,
    parse_snapshot,
)

BEFORE = {"config.max_clients": "512", "config.port": "8774", "service.version": "1"}


def test_a_snapshot_is_key_value_lines_with_spaces_kept_in_the_value() -> None:
    text = "# kvd\n\nservice.version kvd 1.4\nconfig.motd\thello  world \nconfig.empty\n"
    assert parse_snapshot(text) == {"service.version": "kvd 1.4", "config.motd": "hello  world",
                                    "config.empty": ""}


def test_a_line_that_is_not_key_value_is_named_in_the_error() -> None:
    with pytest.raises(SnapshotError, match=r"line 2 is not `key value`.*'WARNING: low disk'"):
        parse_snapshot("config.port 8774\nWARNING: low disk\n")


def test_a_key_given_twice_is_an_error_naming_both_lines() -> None:
    with pytest.raises(SnapshotError, match="line 3: key 'a' already given on line 1"):
        parse_snapshot("a 1\nb 2\na 3\n")


def test_a_snapshot_larger_than_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(SnapshotError, match="larger than 64 KiB"):
        parse_snapshot("k " + "x" * MAX_SNAPSHOT_BYTES)


def test_an_undeclared_change_fails_with_the_values_in_the_message() -> None:
    diff = diff_keys("api", BEFORE, {**BEFORE, "config.max_clients": "64"},
                     fresh={"config.max_clients": "64"})
    [check] = diff.checks("upgrade")
    assert (check.name, check.passed) == ("state api/config.max_clients", False)
    assert check.message == ("upgrade changed api config.max_clients: 512 → 64 "
                             "(not declared in the candidate's upgrade notes)")
    assert diff.changes[0].fresh == "64" and diff.unchanged == 2


def test_a_change_declared_by_a_pattern_passes_with_the_note() -> None:
    notes = (UpgradeNote("config.*", "limits are per worker now"),)
    [check] = diff_keys("api", BEFORE, {**BEFORE, "config.max_clients": "64"},
                        notes=notes).checks("upgrade")
    assert check.passed
    assert check.message.endswith("declared in the candidate's upgrade notes: "
                                  "limits are per worker now")


def test_a_vanished_key_fails_and_a_new_one_is_only_shown() -> None:
    after = {"config.port": "8774", "service.version": "1", "config.idle_timeout_s": "30"}
    diff = diff_keys("api", BEFORE, after)
    assert [(c.key, c.kind) for c in diff.changes] == [("config.idle_timeout_s", "added"),
                                                       ("config.max_clients", "removed")]
    [check] = diff.checks("upgrade")
    assert check.message == ("upgrade removed api config.max_clients (was 512) "
                             "(not declared in the candidate's upgrade notes)")


def test_nothing_changed_is_one_passing_check_counting_the_values() -> None:
    [check] = diff_keys("api", BEFORE, dict(BEFORE)).checks("upgrade")
    assert (check.name, check.passed, check.message) == (
        "state api", True, "3 values unchanged across the upgrade")


def test_a_failed_snapshot_after_the_upgrade_is_a_failed_check() -> None:
    diff = compare("api", Snapshot("hook", values=BEFORE),
                   Snapshot("hook", problem="snapshot api after the upgrade failed (exit 1)"))
    [check] = diff.checks("upgrade")
    assert (check.name, check.passed) == ("state api", False)
    assert "failed (exit 1)" in check.message


def test_a_hook_that_stops_answering_after_the_upgrade_is_a_failed_check() -> None:
    diff = compare("api", Snapshot("hook", values=BEFORE), Snapshot("files"))
    [check] = diff.checks("upgrade")
    assert not check.passed and "before the upgrade but not after it" in check.message


def test_notes_the_known_good_already_shipped_declare_nothing_now() -> None:
    old = UpgradeNote("config.max_clients", "kvd 2 lowered it")
    new = UpgradeNote("service.version", "kvd 3")
    assert new_notes((old, new), (old,)) == (new,)


def test_upgrade_notes_take_key_or_keys_and_need_a_note() -> None:
    notes = parse_notes({"upgrade": [{"key": "a", "note": "why"},
                                     {"keys": ["b", "c.*"], "note": "  two\n lines "}]})
    assert notes == (UpgradeNote("a", "why"), UpgradeNote("b", "two lines"),
                     UpgradeNote("c.*", "two lines"))
    with pytest.raises(NotesError, match="note 1: `note` must say why"):
        parse_notes({"upgrade": [{"key": "a"}]})
    with pytest.raises(NotesError, match="one section, `upgrade:`"):
        parse_notes({"features": []})


def test_a_file_level_diff_lists_changed_lines_and_judges_nothing() -> None:
    before = {"etc/app.conf": FileState("a" * 64, 20, ("workers = 4", "limit = 512")),
              "etc/blob.json": FileState("b" * 64, 9_000_000)}
    after = {"etc/app.conf": FileState("c" * 64, 19, ("workers = 4", "limit = 64")),
             "etc/new.ini": FileState("d" * 64, 3, ("x=1",))}
    diff = diff_files("app", before, after)
    assert [(f.path, f.kind) for f in diff.files] == [
        ("etc/app.conf", "changed"), ("etc/blob.json", "removed"), ("etc/new.ini", "added")]
    assert diff.files[0].diff == ("-limit = 512", "+limit = 64")
    assert diff.checks("upgrade") == []
