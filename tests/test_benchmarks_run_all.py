"""benchmarks/run_all.py keeps working: it runs a benchmark, reads its table, writes the document.

The first tests run the real promotion benchmark at a tiny size (SQLite and PostgreSQL) through
run_all's own machinery and check the document against the table the benchmark printed. The
others feed each parser a table as its benchmark prints it (copied from runs on the development
machine, long lines and rows trimmed): they pin down the format each parser reads. Whoever changes
a benchmark's table changes its parser and its sample here; if they forget, run_all marks that
benchmark "failed: its output could not be read" in docs/benchmarks.md instead of crashing.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks import run_all
from tests.requirements import unavailable

TINY = run_all.Invocation("", "2 and 20 soaking candidates",
                          ("--sizes", "2,20", "--passes", "2", "--soak-runs", "2",
                           "--backends", "sqlite,postgresql"))


@pytest.fixture(scope="module")
def promotion() -> run_all.Outcome:
    """promotion_eval.py run for real, at 2 and 20 candidates on both backends."""
    reason = run_all.needs_postgres()
    if reason:
        unavailable(reason)
    bench = next(b for b in run_all.BENCHMARKS if b.name == "promotion_eval")
    return run_all.run(replace(bench, timeout_s=120), TINY)


def _printed_rows(table: str) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["backend"], r["candidates"]): r for r in run_all.first_table(table)}


def test_a_real_benchmark_run_yields_figures_read_from_its_table(
        promotion: run_all.Outcome) -> None:
    assert promotion.status == "ok", promotion.reason
    printed = _printed_rows(promotion.table)
    assert set(printed) == {(b, n) for b in ("sqlite", "postgresql") for n in ("2", "20")}
    passes = {(f.name, f.scale): f for f in promotion.figures}
    for backend in ("sqlite", "postgresql"):
        for size, scale in (("2", "1x"), ("20", "10x")):
            figure = passes[(f"reconcile pass, {backend}", scale)]
            row = printed[(backend, size)]
            assert figure.value == float(row["pass ms"]) > 0
            assert figure.ratio == float(row["ratio pass/decide"]) > 1
            assert figure.reference == f"decide() alone {row['decide() ms']} ms"
    # The pass reads each candidate's runs and waivers: at least a statement per candidate.
    statements = {f.scale: f.value for f in promotion.figures
                  if f.name == "SQL statements per pass"}
    assert statements["10x"] - statements["1x"] >= 20 - 2


def test_the_document_has_the_machine_the_growth_and_the_table_as_printed(
        promotion: run_all.Outcome) -> None:
    document = run_all.render([promotion], when=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
                              mode="quick", seconds=75, note="Loaded machine.",
                              facts=run_all.machine())
    assert document.startswith("# Benchmarks\n")
    assert "on 2026-03-01 09:30 UTC in 1.2 min (quick sizes). Loaded machine." in document
    assert f"| CPU cores | {os.cpu_count()} |" in document
    growth = next(line for line in document.splitlines()
                  if line.startswith("| promotion_eval | reconcile pass, sqlite |"))
    small, large = (f.value for f in promotion.figures if f.name == "reconcile pass, sqlite")
    assert growth.split(" | ")[2:4] == [run_all.fmt(small, "ms"), run_all.fmt(large, "ms")]
    assert promotion.table in document  # markdown tables go in as printed
    assert "| [promotion_eval](#promotion_eval) | ok | 1 |" in document


def test_run_all_reports_a_failing_and_a_skipped_benchmark_and_still_writes(
        promotion: run_all.Outcome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smallest = run_all.Invocation("", "2 soaking candidates", (
        "--sizes", "2", "--passes", "2", "--soak-runs", "1", "--backends", "sqlite"))
    tiny = replace(promotion.benchmark, invocations=lambda _quick: [smallest], timeout_s=120)
    broken = run_all.Benchmark("broken", "no_such_benchmark.py", "nothing",
                               lambda _quick: [run_all.Invocation("", "", ())],
                               run_all.parse_promotion_eval, "One reconcile pass")
    absent = replace(broken, name="absent", skip=lambda: "needs a lab that is not here")
    monkeypatch.setattr(run_all, "BENCHMARKS", [broken, absent, tiny])
    output = tmp_path / "benchmarks.md"

    assert run_all.main(["--quick", "--output", str(output)]) == 1  # one failed

    document = output.read_text()
    assert re.search(r"\| \[broken\]\(#broken\) \| \*\*failed\*\* \|", document)
    assert "FAILED: exit status 2" in document and "no_such_benchmark.py" in document
    assert "| [absent](#absent) | skipped: needs a lab that is not here |" in document
    assert "| 1x | reconcile pass, sqlite |" in document  # and it ran after them


# What the other benchmarks print (tables copied from real runs).

API_MANIFEST = """
GET /api/v1/manifest, 5969 bytes, 12 components; wrk 1 thread, 16 connections, 2 s each

| server | answer | requests/s | p99 ms | errors | ratio to bare |
|---|---|---:|---:|---:|---:|
| certifier | 200 | 4044 | 32.76 | 0 | 0.95 |
| certifier | 304 | 3695 | 24.22 | 0 | 0.37 |
| bare starlette | 200 | 4278 | 20.25 | 0 | 1.00 |
| bare starlette | 304 | 9908 | 8.35 | 0 | 1.00 |

target: certifier/bare >= 0.8 for 200s: met (0.95)
"""

DASHBOARD = """seeded 100 candidates, 1000 runs, 9940 measurements, 9 known-goods in 0.3 s

PostgreSQL, 100 candidates, 1,000 runs, ~10,000 measurements; 5 sequential requests per page

| page | path | median ms | p90 ms | target ms | |
|---|---|---:|---:|---:|---|
| overview | `/` | 28.4 | 30.5 | < 200 | ok |
| /metrics | `/metrics` | 108.8 | 109.1 | < 100 | SLOW |
"""

WEBHOOK_INGEST = """
webhook ingestion, 16 connections, 3 s each, PostgreSQL + Redis broker, 1000 deliveries stored

endpoint                                deliveries/s   p50 ms   p99 ms  non-2xx  ratio
certifier /api/v1/webhooks/github                212     61.7    248.5        0   0.34
bare: store the body                             622     21.4     85.3        0   1.00

stored deliveries (all rounds): 774; processing tasks queued in Redis: 774
"""

WEBHOOK_LATENCY = """
push to run started, Redis broker, PostgreSQL, 15 pushes (0 without a run within 10 s), 2 CPUs

metric      seconds   target  met
p50           0.463      < 1  yes
p99           0.868
min           0.201
max           0.868
"""

TESTBED = """iperf3: bandwidth suite vs bare iperf3 (h1->h2, same testbed)
  round 1: suite 8.39 Gbit/s, bare 8.16 Gbit/s

benchmark                                | measured    | value | target  | value/target | met
-----------------------------------------+-------------+-------+---------+--------------+-----
iperf3: suite / bare (median Gbit/s)     | 8.39 / 8.16 | 1.028 | >= 0.95 | 1.08         | yes
setup+teardown small-cloud (median of 3) | 0.418 s     | 0.418 | < 2 s   | 0.21         | yes
gate run small-cloud (median of 1)       | 75.6 s      | 75.6  | < 60 s  | 1.26         | NO

load average 6.1 on 2 CPUs; setup+teardown times 0.30, 0.46, 0.42 s; gate runs 75.6 s
"""

DETECTOR = """detector (quick): soak level per check 0.00191, pre-promotion level 0.01

== pre ==
cell                                                     n  false reject %
pre/gauss 3%/none                                      400    0.8 [ 0.3-  2.2]

Targets (issue 5, 3 % CV Gaussian):
  pre  [gauss 3%] catch of a 5 % step >= 95 %: MET (97.5%)
  soak [gauss 3%] false rejects per soak <= 5 %: MISSED by 0.2% (5.2%)
  soak [gauss 3%] median delay <= 8 runs: MET (5.0 runs)

otava: not measured (no --otava-python given)
"""


AB = """ab accuracy (quick): 50 series per candidate; gate level per series at the last look 6.7e-05

cell                   figure                       A/B (new)
independent/none       gate false rejects             0.0 [ 0.0-  2.5] n=150

Targets (issue 12, per candidate with 50 series):
  gate [independent] false rejects per candidate <= 1 %: MET (0.0%)
  pre  [independent] catch of a 5 % step >= 95 %: MISSED by 3.7 (91.3%)
  soak [bursty] false rejects per candidate <= 10 %: not measured
"""

NOISE = """noise harness (1 harmless per level, soak of 10 runs, 30.2 min):
load level 0 (none):
  harmless: n 1, promoted 1, rejected 0, waiting 0, culprit named a harmless commit 0

Targets (issue 12, noise harness):
  level0 [harmless] false rejections <= 1 of 1: MET (0.0 % rejected)
  level0 [tc_cut] 6 % rate cut caught within 10 soak runs: MISSED by 12 (12 soak runs)
  all [cost] gate wall time <= 2.5x a single-run gate: MISSED by 5.50 (5.50 x)

figures in noise_harness.json
"""


def test_noise_harness_targets_keep_their_units_and_verdicts() -> None:
    figures = run_all.parse_noise_harness(NOISE)
    assert [(f.value, f.unit, f.met) for f in figures] == [
        (0.0, "%", True), (12.0, "runs", False), (5.5, "x", False)]


DASHBOARD_SERVING = """round 1 of 5
Dashboard serving: demo-sized, seeded: 9 candidates, 20 runs, 1254 measurements; …

| measurement | requests/s | p99 ms | errors | server CPU, cores |
|---|---:|---:|---:|---:|
| GET / alone | 1848 | 141.45 | 0 | 0.93 |
| manifest alone, certifier | 5932 | 24.68 | 0 | 0.88 |
| manifest while watched, certifier | 6719 | 12.38 | 0 | 0.91 |
| manifest alone, bare starlette | 15730 | 12.49 | 0 | 0.85 |
| manifest while GET / flat out, certifier | 4384 | 56.86 | 0 | 0.97 |
| manifest alone, raw asgi | 18357 | 12.21 | 0 | 0.80 |
| GET / by the 8 watching browsers meanwhile (1.0 changes/s) | 8.0 | | | |
| GET / by the 8 flat-out connections meanwhile | 491 | 99.31 | 0 | |

target: GET / >= 1000 req/s: met (1848)
"""


def test_dashboard_serving_judges_the_watched_manifest_and_reports_the_flat_out_one() -> None:
    page, alone, watched, watched_p99, flat, flat_p99 = run_all.parse_dashboard_serving(
        DASHBOARD_SERVING)
    assert (page.value, page.met, alone.ratio) == (1848, True, pytest.approx(5932 / 15730))
    assert (watched.ratio, watched.met) == (pytest.approx(6719 / 5932), True)
    assert (watched_p99.ratio, watched_p99.met) == (pytest.approx(12.38 / 24.68), True)
    assert (flat.ratio, flat.met, flat_p99.met) == (pytest.approx(4384 / 5932), None, None)
    assert flat_p99.value == 56.86


def test_manifest_figures_are_ratios_to_the_bare_app() -> None:
    plain, conditional, p99 = run_all.parse_api_manifest(API_MANIFEST)
    assert (plain.value, plain.ratio, plain.met) == (4044, pytest.approx(4044 / 4278), True)
    assert conditional.ratio == pytest.approx(3695 / 9908) and conditional.met is None
    assert p99.value == 32.76


def test_dashboard_pages_are_judged_against_their_own_target() -> None:
    overview, metrics = run_all.parse_dashboard_scale(DASHBOARD)
    assert (overview.value, overview.met) == (28.4, True)
    assert (metrics.target, metrics.met) == ("< 100 ms", False)
    assert metrics.ratio == pytest.approx(1.088)


def test_webhook_figures_come_from_the_fixed_width_rows() -> None:
    accepted, p50 = run_all.parse_webhook_ingest(WEBHOOK_INGEST)
    assert (accepted.value, accepted.ratio) == (212, 0.34)
    assert p50.ratio == pytest.approx(61.7 / 21.4)
    latency, p99 = run_all.parse_webhook_latency(WEBHOOK_LATENCY)
    assert (latency.value, latency.target, latency.met, p99.value) == (0.463, "< 1 s", True, 0.868)


def test_testbed_rows_keep_their_target_and_verdict() -> None:
    iperf, setup, gate = run_all.parse_testbed_bench(TESTBED)
    assert (iperf.value, iperf.unit, iperf.ratio, iperf.met) == (8.39, "Gbit/s", 1.028, True)
    assert (iperf.reference, iperf.target) == ("bare iperf3 8.16 Gbit/s", "ratio >= 0.95")
    assert (setup.value, setup.met, gate.target, gate.met) == (0.418, True, "< 60 s", False)


def test_detector_targets_are_read_with_their_verdicts() -> None:
    figures = run_all.parse_detector_accuracy(DETECTOR)
    assert [(f.value, f.unit, f.met) for f in figures] == [
        (97.5, "%", True), (5.2, "%", False), (5.0, "runs", True)]


def test_ab_accuracy_targets_are_read_with_their_verdicts() -> None:
    figures = run_all.parse_ab_accuracy(AB)
    assert [(f.name, f.value, f.met) for f in figures[:2]] == [
        ("gate: false rejects per candidate", 0.0, True),
        ("pre: catch of a 5 % step", 91.3, False)]
    assert figures[2].met is None


def test_output_without_a_table_is_a_parse_error_not_a_crash() -> None:
    for parse in (run_all.parse_api_manifest, run_all.parse_dashboard_scale,
                  run_all.parse_dashboard_serving,
                  run_all.parse_webhook_ingest, run_all.parse_webhook_latency,
                  run_all.parse_testbed_bench, run_all.parse_detector_accuracy,
                  run_all.parse_ab_accuracy, run_all.parse_promotion_eval):
        with pytest.raises(run_all.ParseError):
            parse("Traceback (most recent call last):\n  boom\n")


def test_the_table_starts_at_its_title_and_is_fenced_unless_it_is_markdown() -> None:
    titles = {b.name: b.title for b in run_all.BENCHMARKS}
    latency = run_all.table_part("worker: Warm shutdown (MainProcess)\n" + WEBHOOK_LATENCY,
                                 titles["webhook_latency"])
    assert latency.startswith("push to run started") and "Warm shutdown" not in latency
    assert run_all.as_markdown(latency)[0] == "```text"
    dashboard = run_all.table_part(DASHBOARD, titles["dashboard_scale"])
    assert dashboard.startswith("PostgreSQL, 100 candidates")  # "seeded …" is progress
    assert run_all.as_markdown(dashboard) == dashboard.splitlines()
    testbed = run_all.table_part(TESTBED, titles["testbed_bench"])
    assert testbed.startswith("benchmark ") and "round 1" not in testbed
