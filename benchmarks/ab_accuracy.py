"""Accuracy of A/B judgement (gate and soak against contemporaneous controls), per candidate.

Every trial is one **candidate with 50 series** (throughput-like, higher is better, 10 Gbit/s),
drawn with fixed seeds. Its timeline: 20 earlier runs of the known-good on the testbed (the
history the old detector compares with, and the gate's noise history), one gate run of up to 6
rounds, then 28 soak runs of 2 rounds each; every round measures the candidate and the control.
Each series has an **environment** factor shared by both sides of a run (the testbed's state):

  independent  Gaussian, 3 % CV per run;
  AR(1)        the same with φ = 0.5 from run to run;
  bursty       independent 3 % plus bursts: a run starts one with probability 0.1, and the
               burst lowers 3 consecutive runs by 8 %;
  outliers     independent, and 5 % of all measurements 15 % low (either side);

plus a 1 % shared jitter per round and **independent 3 % CV measurement noise per side and
round**. A regression multiplies one series' candidate values by 0.95 (a 5 % step).

Figures, each with a Wilson 95 % interval:
  gate false rejects per candidate    a good candidate with a ``regressed`` series at the gate
                                      (sequential: 2 rounds, then one more while undecided, ≤ 6)
  pre-promotion catch                 a candidate whose 5 % step is present from its first run is
                                      rejected by the gate or by the soak within its first 10 runs
                                      (the evidence the old pre-promotion check had: 10 runs)
  soak false rejects per candidate    a good candidate rejected at any of its 28 soak checks
  soak catch within 10 runs           a step that begins at soak run 0-18 (uniform) is flagged
                                      within 10 runs of its start; an alarm before it is false
  median delay                        runs after the start when the alarm fires
  soak end (good candidates)          of those the gate and the planned soak passed: extended
                                      past the plan, held for a person (a series leaning
                                      worse), rejected or noise in the extension, promoted
                                      with an undecided series noted (``--soak-end N`` of them,
                                      with the real ``judge_soak``; extension runs drawn afresh)
beside the old detector (``certifier.domain.detector``: the candidate's runs against the
known-good's 20 history runs only, Holm over the 50 series) on the very same data.
Targets (issue 12): gate ≤ 1 %; pre-promotion ≥ 95 %; soak ≤ 5 % (independent), ≤ 10 %
(AR(1), bursty); ≥ 90 % of 5 % steps caught within 10 runs (independent).

Usage: python benchmarks/ab_accuracy.py [--quick] [--candidates N] [--old N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_accuracy import _pct as interval_text
from detector_accuracy import rate

from certifier.domain.absoak import SoakPolicy, first_alarms, judge_soak
from certifier.domain.abtest import (
    ABPolicy,
    NoiseHistory,
    PairedSeries,
    judge_gate,
    pct_threshold,
)
from certifier.domain.detector import DetectorPolicy, Scale, Series, judge_candidate
from certifier.domain.results import Better

SEED = 20_261_205
SERIES = 50
HISTORY = 20
GATE_ROUNDS = 6
SOAK_RUNS = 28
HISTORY_ROUNDS = 2
LATEST_ONSET = 18
STEP = 0.05
NOISE_HISTORY_RUNS = 5
EXTRA_RUNS = SoakPolicy().max_extra_runs + 4  # the bound, a confirmation past it, spare


@dataclass(frozen=True)
class Cell:
    noise: str  # independent | ar1 | bursty | outliers
    change: str  # none | pre (step from the gate on) | soak (from soak run 0-18) | gate15
    trials: int
    rounds: int = 3  # per soak run

    @property
    def name(self) -> str:
        return f"{self.noise}/{self.change}"


def cells(quick: bool, candidates: int | None, rounds: int) -> list[Cell]:
    n = candidates or (150 if quick else 3000)
    grid = [("independent", "none"), ("ar1", "none"), ("bursty", "none"), ("outliers", "none"),
            ("independent", "pre"), ("outliers", "pre"), ("independent", "gate15"),
            ("independent", "soak"), ("ar1", "soak"), ("bursty", "soak"), ("outliers", "soak")]
    return [Cell(noise, change, n, rounds) for noise, change in grid]


# --- data ----------------------------------------------------------------------------------------

@dataclass
class Drawn:
    """One cell's values, candidates x series x runs x rounds (history: control only)."""

    history: np.ndarray  # (c, s, HISTORY, HISTORY_ROUNDS)
    gate: np.ndarray  # (c, s, 2 sides, GATE_ROUNDS)
    soak: np.ndarray  # (c, s, 2 sides, SOAK_RUNS, rounds)
    onset: np.ndarray  # (c,) soak run where the step begins (SOAK_RUNS: none / from the gate)
    extra: np.ndarray  # (c, s, 2 sides, EXTRA_RUNS, rounds): the extension's runs, no step


def _environment(rng: np.random.Generator, noise: str, shape: tuple[int, int], runs: int
                 ) -> np.ndarray:
    z = rng.standard_normal((*shape, runs))
    if noise == "ar1":
        e = np.empty_like(z)
        e[..., 0] = z[..., 0]
        for t in range(1, runs):
            e[..., t] = 0.5 * e[..., t - 1] + math.sqrt(1 - 0.25) * z[..., t]
        z = e
    env = 1 + 0.03 * z
    if noise == "bursty":
        starts = rng.random((*shape, runs)) < 0.1
        burst = np.zeros((*shape, runs), dtype=bool)
        for lag in range(3):
            burst[..., lag:] |= starts[..., :runs - lag]
        env = env * np.where(burst, 0.92, 1.0)
    return env


def draw(cell: Cell) -> Drawn:
    rng = np.random.default_rng([SEED, zlib.crc32(cell.name.encode())])
    c, s = cell.trials, SERIES
    runs = HISTORY + 1 + SOAK_RUNS
    env = _environment(rng, cell.noise, (c, s), runs)  # per run, shared by both sides

    def measure(env_runs: np.ndarray, sides: int, rounds: int) -> np.ndarray:
        shape = (c, s, sides, env_runs.shape[-1], rounds)
        jitter = 1 + 0.01 * rng.standard_normal((c, s, 1, env_runs.shape[-1], rounds))
        values = 10.0 * env_runs[:, :, None, :, None] * jitter * (
            1 + 0.03 * rng.standard_normal(shape))
        if cell.noise == "outliers":
            values = np.where(rng.random(shape) < 0.05, 0.85 * values, values)
        return values

    history = measure(env[..., :HISTORY], 1, HISTORY_ROUNDS)[:, :, 0]
    gate = measure(env[..., HISTORY:HISTORY + 1], 2, GATE_ROUNDS)[:, :, :, 0]
    soak = measure(env[..., HISTORY + 1:], 2, cell.rounds)
    onset = np.full(c, SOAK_RUNS)
    if cell.change in ("pre", "gate15"):
        size = 0.15 if cell.change == "gate15" else STEP
        onset[:] = 0
        gate[:, 0, 0] *= 1 - size
        soak[:, 0, 0] *= 1 - size
    elif cell.change == "soak":
        onset = rng.integers(0, LATEST_ONSET + 1, size=c)
        after = np.arange(SOAK_RUNS)[None, :] >= onset[:, None]
        soak[:, 0, 0] *= np.where(after, 1 - STEP, 1.0)[:, :, None]
    # Drawn after the rest, so the figures above keep their values; the environment starts
    # afresh (stationary) rather than carrying the AR(1) state or a burst over.
    extra = measure(_environment(rng, cell.noise, (c, s), EXTRA_RUNS), 2, cell.rounds)
    return Drawn(history, gate, soak, onset, extra)


def _paired(values: np.ndarray, series: int) -> PairedSeries:
    """values: (2 sides, rounds)."""
    rounds = values.shape[-1]
    return PairedSeries("bandwidth", "throughput_gbps", "Gbit/s", Better.HIGHER,
                        {"series": str(series)}, tuple(range(rounds)),
                        tuple(values[0].tolist()), tuple(values[1].tolist()))


# --- the A/B judgement ------------------------------------------------------------------------

def gate(drawn: Drawn, policy: ABPolicy) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: regressed at the gate, and the rounds it took (real ``judge_gate``)."""
    c = drawn.gate.shape[0]
    regressed = np.zeros(c, dtype=bool)
    rounds_taken = np.zeros(c, dtype=np.int64)
    for i in range(c):
        noise = NoiseHistory({
            _paired(drawn.gate[i, j], j).key: [tuple(run) for run in
                                               drawn.history[i, j, -NOISE_HISTORY_RUNS:].tolist()]
            for j in range(SERIES)})
        for r in range(policy.min_rounds, policy.max_rounds + 1):
            verdict = judge_gate([_paired(drawn.gate[i, j, :, :r], j) for j in range(SERIES)],
                                 policy, noise)
            rounds_taken[i] = r
            if verdict.regressed:
                regressed[i] = True
                break
            if not verdict.suites_to_remeasure():
                break  # as the runner: only a round that could decide something is run
    return regressed, rounds_taken


def soak_diffs(drawn: Drawn) -> np.ndarray:
    """Worse-oriented log-percent differences, (candidates·series) x runs x rounds."""
    d = -100.0 * (np.log(drawn.soak[:, :, 0]) - np.log(drawn.soak[:, :, 1]))
    return d.reshape(-1, SOAK_RUNS, d.shape[-1])


def soak(drawn: Drawn, policy: SoakPolicy) -> np.ndarray:
    """Per candidate: the first soak check that rejects it (0: never)."""
    floor = pct_threshold(policy.floor_pct, Better.HIGHER, Scale.LOG)
    alarms = first_alarms(soak_diffs(drawn), policy.level(SERIES), floor, policy.min_runs)
    per = alarms.reshape(-1, SERIES)
    per = np.where(per == 0, 10**6, per).min(axis=1)
    return np.where(per == 10**6, 0, per)


def verify(drawn: Drawn, policy: SoakPolicy, alarms: np.ndarray, n: int) -> tuple[int, int]:
    """The vectorised rule against the real ``judge_soak``, check by check, on ``n`` candidates."""
    agree = 0
    for i in range(n):
        first = 0
        for check in range(1, SOAK_RUNS + 1):
            runs = [[_paired(drawn.soak[i, j, :, r], j) for j in range(SERIES)]
                    for r in range(check)]
            if judge_soak(runs, policy).regressed:
                first = check
                break
        agree += first == alarms[i]
    return agree, n


def soak_end(drawn: Drawn, policy: SoakPolicy, good: np.ndarray, n: int) -> dict[str, Any]:
    """How the soak of a good candidate ends once its planned runs pass, on the first ``n``
    candidates ``good`` marks (passed the gate, no alarm in the planned runs), with the real
    ``judge_soak`` after every run and the promotion policy's rules: a series still undecided
    extends the soak one run at a time while the runs it needs fit in the ``max_extra_runs``
    left (``promotion._extension``); a series that leans worse extends it to the bound and then
    holds the candidate for a person (``awaiting_decision``); a regression asks for the next
    run, even past the bound, and rejects only when that run regresses on the same series
    (``promotion._confirms``), else it is noise and the soak goes on."""
    chosen = np.flatnonzero(good)[:n]
    extended = held = rejected = noise = promoted_undecided = 0
    extra_runs: list[int] = []
    available = drawn.extra.shape[3]
    for i in chosen:
        runs = [[_paired(drawn.soak[i, j, :, r], j) for j in range(SERIES)]
                for r in range(SOAK_RUNS)]
        extra, unconfirmed, was_noise = 0, frozenset[str](), False
        while True:
            verdict = judge_soak(runs, policy)
            regressed = frozenset(v.key for v in verdict.regressed)
            if regressed & unconfirmed:
                rejected += 1
                break
            was_noise |= bool(unconfirmed)
            unconfirmed = regressed
            undecided = verdict.undecided
            leaning = any(v.leans_worse for v in undecided)
            needed = max((v.runs_needed for v in undecided), default=0)
            left = policy.max_extra_runs - extra
            if not regressed and (not undecided or left <= 0
                                  or (needed > left and not leaning)):
                held += leaning
                promoted_undecided += bool(undecided) and not leaning
                break
            if extra == available:
                raise SystemExit(f"soak_end: {available} extension runs drawn, more needed")
            runs.append([_paired(drawn.extra[i, j, :, extra], j) for j in range(SERIES)])
            extra += 1
        extended += extra > 0
        noise += was_noise
        extra_runs.append(extra)
    k = len(chosen)
    return {"extended": rate(extended, k), "held_for_a_person": rate(held, k),
            "rejected_in_extension": rate(rejected, k),
            "noise_in_extension": rate(noise, k),
            "promoted_with_undecided": rate(promoted_undecided, k),
            "extra_runs_mean": float(np.mean(extra_runs)) if extra_runs else None}


# --- the old detector ------------------------------------------------------------------------

def old_detector(drawn: Drawn, candidates: int, pre: bool) -> np.ndarray:
    """Per candidate: first soak check rejecting it by history alone (pre: one check of 10)."""
    policy = DetectorPolicy.pre_promotion() if pre else DetectorPolicy.soak(SOAK_RUNS)
    base = np.median(drawn.history, axis=-1)  # (c, s, HISTORY) one value per run
    cand = np.median(drawn.soak[:, :, 0], axis=-1)  # (c, s, SOAK_RUNS)
    out = np.zeros(candidates, dtype=np.int64)
    for i in range(candidates):
        for check in ((10,) if pre else range(policy.min_runs, SOAK_RUNS + 1)):
            series = [Series("bandwidth", "throughput_gbps", "Gbit/s", Better.HIGHER,
                             tuple(base[i, j].tolist()), tuple(cand[i, j, :check].tolist()),
                             {"series": str(j)}) for j in range(SERIES)]
            if judge_candidate(series, policy, locate=False).regressed:
                out[i] = check
                break
    return out


# --- figures ---------------------------------------------------------------------------------

def soak_figures(alarms: np.ndarray, onset: np.ndarray) -> dict[str, Any]:
    fired = alarms > 0
    early = fired & (alarms <= onset)
    delay = np.where(fired & (alarms > onset), alarms - onset, 10**6)
    n = len(alarms)
    ordered = np.sort(delay)
    median = float(ordered[(n - 1) // 2]) if n else math.inf
    return {"false_reject": rate(int(early.sum()), n),
            "catch_10": rate(int((delay <= 10).sum()), n),
            "median_delay": median if median < 10**6 else None}


def run_cell(cell: Cell, gate_policy: ABPolicy, soak_policy: SoakPolicy, old: int,
             check: int, say: Callable[[str], None], end: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    drawn = draw(cell)
    n = cell.trials
    out: dict[str, Any] = {"candidates": n}
    alarms = soak(drawn, soak_policy)
    if cell.change == "soak":
        out["soak"] = soak_figures(alarms, drawn.onset)
    else:
        gated, rounds = gate(drawn, gate_policy)
        out["gate_rounds_mean"] = float(rounds.mean())
        if cell.change == "none":
            out["gate_false_reject"] = rate(int(gated.sum()), n)
            out["soak_false_reject"] = rate(int((alarms > 0).sum()), n)
            if end:
                out["soak_end"] = soak_end(drawn, soak_policy, ~gated & (alarms == 0), end)
        else:
            out["gate_catch"] = rate(int(gated.sum()), n)
            out["pre_promotion_catch"] = rate(int((gated | ((alarms > 0) & (alarms <= 10))).sum()),
                                              n)
    if check:
        out["judge_soak_agrees"] = verify(drawn, soak_policy, alarms, min(check, n))
    if old and cell.change != "gate15" and (cell.noise in ("independent", "ar1", "bursty")
                                            or cell.change == "pre"):
        k = min(old, n)
        if cell.change in ("none", "pre"):
            pre = old_detector(drawn, k, pre=True)
            key = "old_pre_false_reject" if cell.change == "none" else "old_pre_catch"
            out[key] = rate(int((pre > 0).sum()), k)
        if cell.change != "pre":
            old_alarms = old_detector(drawn, k, pre=False)
            if cell.change == "soak":
                out["old_soak"] = soak_figures(old_alarms, drawn.onset[:k])
            else:
                out["old_soak_false_reject"] = rate(int((old_alarms > 0).sum()), k)
    say(f"{cell.name}: {time.perf_counter() - start:.0f} s")
    return out


def _pct(r: dict[str, Any] | None) -> str:
    """The detector benchmark's "rate [interval]", and how many candidates it rests on."""
    return "-" if r is None else f"{interval_text(r)} n={r['n']}"


@dataclass(frozen=True)
class Target:
    text: str
    cell: str
    path: tuple[str, ...]
    bound: float
    at_most: bool

    def judge(self, results: dict[str, dict[str, Any]]) -> str:
        value: Any = results.get(self.cell, {})
        for part in self.path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return f"{self.text}: not measured"
        measured = value["rate"]
        ok = measured <= self.bound if self.at_most else measured >= self.bound
        shown = f"{100 * measured:.1f}%"
        if ok:
            return f"{self.text}: MET ({shown})"
        return f"{self.text}: MISSED by {abs(measured - self.bound) * 100:.1f} ({shown})"


TARGETS = [
    Target("gate [independent] false rejects per candidate <= 1 %", "independent/none",
           ("gate_false_reject",), 0.01, True),
    Target("gate [AR(1)] false rejects per candidate <= 1 %", "ar1/none",
           ("gate_false_reject",), 0.01, True),
    Target("pre  [independent] catch of a 5 % step >= 95 %", "independent/pre",
           ("pre_promotion_catch",), 0.95, False),
    Target("soak [independent] false rejects per candidate <= 5 %", "independent/none",
           ("soak_false_reject",), 0.05, True),
    Target("soak [AR(1)] false rejects per candidate <= 10 %", "ar1/none",
           ("soak_false_reject",), 0.10, True),
    Target("soak [bursty] false rejects per candidate <= 10 %", "bursty/none",
           ("soak_false_reject",), 0.10, True),
    Target("soak [independent] 5 % steps caught within 10 runs >= 90 %", "independent/soak",
           ("soak", "catch_10"), 0.90, False),
]


def report(results: dict[str, dict[str, Any]], soak_policy: SoakPolicy,
           gate_policy: ABPolicy, mode: str) -> str:
    lines = [f"ab accuracy ({mode}): {SERIES} series per candidate; gate level per series at the "
             f"last look {gate_policy.level(SERIES):.2g}; soak level per check "
             f"{soak_policy.level(SERIES):.3g} ({soak_policy.max_runs}-run plan, "
             f"{soak_policy.rounds_per_run} rounds a run)", ""]
    head = f"{'cell':22} {'figure':28} {'A/B (new)':34} {'old detector (history only)':34}"
    lines += [head, "-" * len(head)]
    for name, r in results.items():
        rows: list[tuple[str, Any, Any]] = []
        if "gate_false_reject" in r:
            rows += [("gate false rejects", r["gate_false_reject"], None),
                     ("soak false rejects", r["soak_false_reject"],
                      r.get("old_soak_false_reject")),
                     ("pre-promotion false rej.", None, r.get("old_pre_false_reject"))]
        if "gate_catch" in r:
            rows += [("gate catch", r["gate_catch"], None),
                     ("pre-promotion catch", r["pre_promotion_catch"], r.get("old_pre_catch"))]
        if "soak" in r:
            old = r.get("old_soak", {})
            rows += [("soak false (early) alarms", r["soak"]["false_reject"],
                      old.get("false_reject")),
                     ("soak caught within 10 runs", r["soak"]["catch_10"], old.get("catch_10"))]
            lines.append(f"{name:22} {'median delay (runs)':28} "
                         f"{r['soak']['median_delay']!s:34} {old.get('median_delay', '-')!s:34}")
        for label, new, old_value in rows:
            lines.append(f"{name:22} {label:28} {_pct(new):34} {_pct(old_value):34}")
        if "soak_end" in r:
            e = r["soak_end"]
            lines += [f"{name:22} {label:28} {_pct(e[key]):34}" for label, key in (
                ("soak extended", "extended"), ("held for a person (leans)", "held_for_a_person"),
                ("rejected in the extension", "rejected_in_extension"),
                ("noise (not confirmed) there", "noise_in_extension"),
                ("promoted, undecided noted", "promoted_with_undecided"))]
            if e["extra_runs_mean"] is not None:
                lines.append(f"{name:22} {'extra soak runs (mean)':28} "
                             f"{e['extra_runs_mean']:.2f}")
        if "gate_rounds_mean" in r:
            lines.append(f"{name:22} {'gate rounds (mean)':28} {r['gate_rounds_mean']:.2f}")
        if "judge_soak_agrees" in r:
            agree, of = r["judge_soak_agrees"]
            lines.append(f"{name:22} {'judge_soak = vectorised':28} {agree} of {of}")
    lines += ["", "Targets (issue 12, per candidate with 50 series):"]
    lines += ["  " + t.judge(results) for t in TARGETS]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 candidates a cell (CI size)")
    parser.add_argument("--candidates", type=int, help="candidates per cell (full: 3000)")
    parser.add_argument("--old", type=int, help="candidates per cell for the old detector "
                        "(slow: full 300, quick 30)")
    parser.add_argument("--check", type=int, default=None,
                        help="candidates per cell also judged by judge_soak itself (quick: 3)")
    parser.add_argument("--soak-end", type=int, default=None,
                        help="good candidates per cell whose soak's end (extension, hold for "
                        "a person) is played with judge_soak (slow: full 300, quick 5)")
    parser.add_argument("--soak-rounds", type=int, default=SoakPolicy().rounds_per_run,
                        help="rounds per soak run (default: the soak policy's)")
    parser.add_argument("--only", help="cells to run, e.g. independent/none,independent/soak")
    parser.add_argument("--json", metavar="FILE", help="also write all results here")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    gate_policy, soak_policy = ABPolicy(), SoakPolicy(rounds_per_run=args.soak_rounds)
    old = args.old if args.old is not None else (30 if args.quick else 300)
    check = args.check if args.check is not None else (3 if args.quick else 0)
    end = args.soak_end if args.soak_end is not None else (5 if args.quick else 300)
    selected = [cell for cell in cells(args.quick, args.candidates, args.soak_rounds)
                if not args.only or cell.name in args.only.split(",")]
    results = {cell.name: run_cell(cell, gate_policy, soak_policy, old, check, say, end)
               for cell in selected}
    print(report(results, soak_policy, gate_policy, "quick" if args.quick else "full"))
    if args.json:
        # numpy scalars (a median delay, a count) as plain numbers
        Path(args.json).write_text(json.dumps(results, indent=1, default=_plain))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
