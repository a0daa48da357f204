"""A run's whole log goes to its own file in the data folder; the worker's log gets one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from workers import runner

from .helpers import git_repo, harness, write_hook


def test_a_run_writes_its_log_to_its_own_file_and_one_line_to_the_worker_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    repo, sha = git_repo(tmp_path / "upstream", {"app.conf": "x = 1\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", "for i in $(seq 1 30); do echo step $i; done\n"
                                 "echo 'cannot bind port 80' >&2; exit 1")
    h = harness(tmp_path, {"app": (repo, recipe)})
    h.report("app", sha)
    run_id = h.gate_run()
    caplog.set_level(logging.DEBUG, logger="workers.runner")

    run = h.execute(run_id)

    path = h.settings.runs_dir / f"run-{run_id}.log"
    assert path.read_text() == run.log + "\nverdict: failed\n"  # the database keeps its copy
    assert "step 30" in run.log and "deploy failed: suites skipped" in run.log
    [line] = [r.getMessage() for r in caplog.records if r.name == "workers.runner"]
    assert line.startswith(f"run {run_id} (gate) of candidate ")
    assert ": failed (deploy check 'app' failed: exit 1: " in line
    assert line.endswith(f"; log: {path}")
    assert "\n" not in line and "step 13" not in line  # each excuse's first line only


def test_a_run_log_file_is_cut_at_its_limit_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "LOG_FILE_LIMIT", 100)
    out = runner.RunLog(tmp_path / "run-1.log")
    for i in range(50):
        out.add(f"line {i}")
    text = (tmp_path / "run-1.log").read_text()
    assert text.startswith("line 0\nline 1\n") and "line 49" not in text
    assert text.endswith("(log file cut at 100 characters; the tail is stored with the run)\n")
    assert len(out.lines) == 50  # what the database keeps is not cut by the file's limit


def test_only_the_newest_run_log_files_are_kept(tmp_path: Path) -> None:
    for run_id in (3, 10, 7, 1):
        (tmp_path / f"run-{run_id}.log").write_text("old\n")
    (tmp_path / "run-10").mkdir()  # the run's folder is not a log file
    assert runner._log_file(tmp_path, 11, keep=3) == tmp_path / "run-11.log"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-10", "run-10.log", "run-7.log"]


def test_a_log_file_that_cannot_be_written_costs_the_run_nothing(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file where the folder should be\n")
    assert runner._log_file(tmp_path / "runs", 5) is None
    out = runner.RunLog(tmp_path / "runs" / "run-5.log")
    out.add("still logged")
    assert out.path is None and out.text() == "still logged"
