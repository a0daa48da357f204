"""When the noise harness stops driving a candidate and counts it as waiting, and how it pools
figures over several runs (benchmarks/)."""

import statistics
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks.noise_harness import (
    BREAKAGES,
    BUSY_PATIENCE,
    Outcome,
    Unpoolable,
    _held,
    _leaned,
    _waits_for,
    code_fingerprint,
    failures,
    pool,
    summary,
    targets,
)
from certifier.domain.judgement import Excuse


def busy(runs: int) -> Excuse:
    return Excuse("infra_retry", "run 9",
                  "gating: waiting for the testbed to calm down, next try in 30s (testbed too "
                  "busy: cpu pressure 93 % (ceiling 50 %)); a busy testbed never counts against "
                  "the candidate", {"runs": list(range(runs)), "busy": True})


def test_a_candidate_waiting_for_a_person_is_held() -> None:
    assert _held([Excuse("awaiting_decision", "promotion", "…")])
    assert _held([Excuse("infra_error", "run 3", "retries exhausted")])


def test_a_busy_testbed_is_waited_for_a_few_runs_then_counted_as_waiting() -> None:
    assert not _held([busy(BUSY_PATIENCE - 1)])
    assert _held([busy(BUSY_PATIENCE)])


def test_a_candidate_still_gating_or_soaking_is_not_held() -> None:
    assert not _held([Excuse("soaking", "soak", "soaking: 1h of 7d")])
    retry = replace(busy(5), message="gating: testbed or tool error, retry 1 of 2 in 30s",
                    data={"runs": list(range(5))})
    assert not _held([retry])


def test_culprit_finding_on_a_busy_testbed_is_left_waiting_after_a_few_runs() -> None:
    def finding(busy_runs: int) -> Excuse:
        return Excuse("bisection", "culprit finding",
                      "culprit finding: step 1 of at most 16: waiting for the testbed to calm "
                      "down …", {"steps": 1, "max_steps": 16, "busy_runs": busy_runs})
    assert not _held([finding(BUSY_PATIENCE - 1)])
    assert _held([finding(BUSY_PATIENCE)])


# Pooling figures over several runs (--append) ---------------------------------------------------


def outcome(kind: str, name: str, end: str, **kw: object) -> dict[str, object]:
    return asdict(Outcome(kind, name, "api", f"sha of {name}", end=end, **kw))  # type: ignore[arg-type]


def figures(candidates: list[dict[str, object]], *, code: str = "c0de", when: str = "t1",
            soak_runs: int = 4, max_extra: int = 8,
            single: tuple[float, ...] = (12.0,)) -> dict[str, Any]:
    level = summary(1, [Outcome(**c) for c in candidates])  # type: ignore[arg-type]
    level.update(load="stress-ng --cpu 1 --hdd 1", seconds=60.0, candidates=candidates)
    return {"when": when, "code": code, "soak_runs": soak_runs, "max_extra_runs": max_extra,
            "single_run_gate_s": statistics.median(single), "harmless_per_level":
            level["harmless"], "seconds": 60.0, "levels": [level], "failures": failures([level]),
            "batches": [{"when": when, "commit": "abc", "seed": 12, "seconds": 60.0,
                         "single_run_s": single, "harmless": {"1": level["harmless"]}}]}


def test_pooled_figures_count_every_run_s_candidates_and_list_the_batches() -> None:
    first = figures([outcome("harmless", "a", "promoted", soak_extended=True, leaned=True),
                     outcome("breakage", "MTU mismatch", "rejected", fitting=True)])
    second = figures([outcome("harmless", "b", "rejected"),
                      outcome("harmless", "c", "waiting", waited_for="a person"),
                      outcome("breakage", "MTU mismatch", "promoted")], when="t2",
                     single=(10.0, 11.0, 20.0))
    pooled = pool(first, second)
    (level,) = pooled["levels"]
    assert (level["harmless"], level["promoted"], level["rejected"], level["waiting"]) == \
        (3, 1, 1, 1)
    assert (level["soak_extended"], level["leaned"], level["held_for_a_person"]) == (1, 1, 1)
    assert list(level["breakages"]) == ["MTU mismatch", "MTU mismatch (2)"]
    assert pooled["failures"] == ["level 1: MTU mismatch (2) ended promoted (not caught)"]
    assert [b["when"] for b in pooled["batches"]] == ["t1", "t2"]
    assert pooled["seconds"] == 120.0 and level["seconds"] == 120.0
    assert pooled["harmless_per_level"] == 3
    assert pooled["single_run_gate_s"] == 11.5  # the median of every one-sided run: 10 11 12 20


def test_figures_of_other_code_or_another_soak_are_not_pooled() -> None:
    mine = figures([outcome("harmless", "a", "promoted")])
    with pytest.raises(Unpoolable, match="the code under test differs"):
        pool(mine, figures([outcome("harmless", "b", "promoted")], code="beef"))
    with pytest.raises(Unpoolable, match="the soak's runs differs"):
        pool(mine, figures([outcome("harmless", "b", "promoted")], soak_runs=10))
    with pytest.raises(Unpoolable, match="the soak's extension differs"):
        pool(mine, figures([outcome("harmless", "b", "promoted")], max_extra=4))


def test_the_rate_cut_target_holds_for_every_pooled_cut() -> None:
    cut = BREAKAGES[0].name
    quick = outcome("breakage", cut, "rejected", fitting=True, soak_runs=6)
    slow = outcome("breakage", cut, "rejected", fitting=True, soak_runs=12)
    pooled = pool(figures([quick]), figures([slow], when="t2"))
    assert list(pooled["levels"][0]["breakages"]) == [cut, f"{cut} (2)"]
    said = targets(pooled["levels"], None)
    assert "[tc_cut] 6 % rate cut caught within 10 soak runs: MISSED by 12 " \
        "(12 soak runs at most, of 2 caught)" in said


def test_a_soak_run_that_found_a_series_leaning_worse_counts_as_leaned() -> None:
    def run(kind: str, *excuses: Excuse) -> SimpleNamespace:
        return SimpleNamespace(kind=kind, excuses=excuses)

    sentence = ("storage rand_write_iops: cannot decide yet after 3 soak runs, needs >= 2 more "
                "runs; it leans worse")
    leaning = Excuse("undecidable", "storage rand_write_iops", sentence,
                     {"leans_worse": True, "runs_needed": 2})
    merely = Excuse("undecidable", "series", "cannot decide 40 series yet",
                    {"series": ["a", "b"], "runs_needed": 3})
    assert _leaned([run("gate"), run("soak", merely), run("soak", leaning)])  # type: ignore[list-item]
    assert not _leaned([run("soak", merely)])  # type: ignore[list-item]
    # only the soak's runs count: the gate's "undecided" never extends a soak
    assert not _leaned([run("gate", leaning)])  # type: ignore[list-item]


def test_the_code_fingerprint_follows_the_code_but_not_the_web_pages(tmp_path: Path) -> None:
    for name in ("certifier/domain/x.py", "certifier/web/templates/a.html", "workers/w.py",
                 "benchmarks/noise_harness.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1")
    before = code_fingerprint(tmp_path)
    (tmp_path / "certifier/web/templates/a.html").write_text("2")
    assert code_fingerprint(tmp_path) == before
    (tmp_path / "workers/w.py").write_text("2")
    assert code_fingerprint(tmp_path) != before


def test_whom_a_waiting_candidate_waits_for() -> None:
    assert _waits_for([Excuse("awaiting_decision", "promotion", "…")]) == "a person"
    assert _waits_for([busy(BUSY_PATIENCE)]) == "a calm testbed"
