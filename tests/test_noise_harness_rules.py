"""When the noise harness stops driving a candidate and counts it as waiting, and how it pools
figures over several runs (benchmarks/)."""

from dataclasses import asdict, replace
from pathlib import Path

import pytest

from benchmarks.noise_harness import (
    BUSY_PATIENCE,
    Outcome,
    Unpoolable,
    _held,
    _waits_for,
    code_fingerprint,
    failures,
    pool,
    summary,
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
            soak_runs: int = 4) -> dict[str, object]:
    level = summary(1, [Outcome(**c) for c in candidates])  # type: ignore[arg-type]
    level.update(load="stress-ng --cpu 1 --hdd 1", seconds=60.0, candidates=candidates)
    return {"when": when, "code": code, "soak_runs": soak_runs, "max_extra_runs": None,
            "single_run_gate_s": 12.0, "harmless_per_level": level["harmless"],
            "seconds": 60.0, "levels": [level], "failures": failures([level]),
            "batches": [{"when": when, "commit": "abc", "seed": 12, "seconds": 60.0,
                         "single_run_gate_s": 12.0, "harmless": {"1": level["harmless"]}}]}


def test_pooled_figures_count_every_run_s_candidates_and_list_the_batches() -> None:
    first = figures([outcome("harmless", "a", "promoted", soak_extended=True, leaned=True),
                     outcome("breakage", "MTU mismatch", "rejected", fitting=True)])
    second = figures([outcome("harmless", "b", "rejected"),
                      outcome("harmless", "c", "waiting", waited_for="a person"),
                      outcome("breakage", "MTU mismatch", "promoted")], when="t2")
    pooled = pool(first, second)
    (level,) = pooled["levels"]
    assert (level["harmless"], level["promoted"], level["rejected"], level["waiting"]) == \
        (3, 1, 1, 1)
    assert (level["soak_extended"], level["leaned"], level["held_for_a_person"]) == (1, 1, 1)
    assert list(level["breakages"]) == ["MTU mismatch", "MTU mismatch (2)"]
    assert pooled["failures"] == ["level 1: MTU mismatch (2) ended promoted (not caught)"]
    assert [b["when"] for b in pooled["batches"]] == ["t1", "t2"]
    assert pooled["seconds"] == 120.0 and level["seconds"] == 120.0


def test_figures_of_other_code_or_another_soak_are_not_pooled() -> None:
    mine = figures([outcome("harmless", "a", "promoted")])
    with pytest.raises(Unpoolable, match="the code under test differs"):
        pool(mine, figures([outcome("harmless", "b", "promoted")], code="beef"))
    with pytest.raises(Unpoolable, match="the soak's runs differs"):
        pool(mine, figures([outcome("harmless", "b", "promoted")], soak_runs=10))


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
