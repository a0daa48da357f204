"""The environment check through the real runner: each suite is measured as a span, the
calibration probe runs at the start and the end, the figures are stored with the run, and a run
outside the configured range ends ``infra_error`` with the excuse.

On the ``local`` driver (loopback, no root needed), with a component that has no recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from certifier.domain.environment import FIGURES
from certifier.domain.judgement import RunJudgement
from certifier.pipeline import runs
from certifier.settings import EnvironmentConfig
from tests.recipes.helpers import git_repo, harness
from tests.requirements import needs_binary
from workers.testbed import records

pytestmark = needs_binary("ping", "iperf3", "fio")


def _run(tmp_path: Path, environment: EnvironmentConfig) -> tuple[object, Path]:
    repo, sha = git_repo(tmp_path / "upstream", {"README": "hello\n"})
    h = harness(tmp_path, {"app": (repo, None)}, suites=("ping",), environment=environment)
    h.report("app", sha)
    return h.execute(h.gate_run()), h.settings.records_dir


def test_a_run_stores_its_suite_spans_and_both_probes(tmp_path: Path) -> None:
    run, records_dir = _run(tmp_path, EnvironmentConfig())
    environment = run.environment  # type: ignore[attr-defined]
    assert list(environment["spans"]) == ["ping"]
    assert environment["host"]["seconds"] > 0
    for which in ("start", "end"):
        probe = environment["probes"][which]
        assert probe["driver"] == "local" and probe["probe_tcp_gbps"] > 0, probe
    log = run.log  # type: ignore[attr-defined]
    assert "environment: probe start" in log and "environment: probe end" in log
    assert records.read_all(records_dir) == {}


def test_a_run_outside_the_configured_range_is_infra_error_with_the_excuse(
        tmp_path: Path) -> None:
    # Only this ceiling, which no loopback reaches: the machine's own load plays no part.
    ceilings: dict[str, float | None] = dict.fromkeys(FIGURES)
    unreachable = EnvironmentConfig(ceilings=ceilings | {"probe_tcp_gbps": 1e6},
                                    probe_fio=False)
    run, _ = _run(tmp_path, unreachable)
    assert run.verdict == "infra_error"  # type: ignore[attr-defined]
    (excuse,) = run.excuses  # type: ignore[attr-defined]
    assert excuse.subject == "environment"
    assert excuse.message.startswith("testbed too busy: probe bandwidth ")
    assert excuse.message.endswith("(ceiling 1000000 Gbit/s)")
    assert ";" not in excuse.message
    assert run.too_busy is True  # type: ignore[attr-defined]


def test_without_the_probe_only_the_suites_are_measured(tmp_path: Path) -> None:
    run, _ = _run(tmp_path, EnvironmentConfig(probe=False))
    assert run.environment["probes"] == {}  # type: ignore[attr-defined]
    assert list(run.environment["spans"]) == ["ping"]  # type: ignore[attr-defined]


def test_the_runner_judges_a_run_once_and_finish_records_that_judgement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    judge = runs.judge

    def counted(session: Session, run_id: int, *args: Any, **kwargs: Any) -> RunJudgement:
        calls.append(run_id)
        return judge(session, run_id, *args, **kwargs)

    monkeypatch.setattr(runs, "judge", counted)
    run, _ = _run(tmp_path, EnvironmentConfig(probe=False))
    assert run.verdict == "passed"  # type: ignore[attr-defined]
    assert calls == [run.id]  # type: ignore[attr-defined]
