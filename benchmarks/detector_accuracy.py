"""Accuracy of the regression detector on generated series, beside apache-otava's E-Divisive.

Every series is drawn with a fixed seed: 20 baseline runs (the known-good on the same testbed)
followed by the candidate's runs, one continuous series so that autocorrelation, drift and the
daily cycle carry over from baseline to candidate, as they do on a real testbed. The metric is
higher-is-better (Gbit/s) except for the latency family (ms, lower is better, log scale).

Scenarios
  pre   pre-promotion comparison: 10 candidate runs against the baseline, one check at 1 %.
  soak  a check after each of 28 soak runs (7 days, 4 a day); the first alarm rejects. A change
        begins at a random soak run 0-18, so at least 10 runs follow it.

Per cell: false rejects (an alarm on a good candidate or before the change began), catch rate
within 5 and 10 runs of the change, median and p90 delay (runs at or after the change seen when
the alarm fired; a miss counts as never), change-point location error, time per check, each
rate with a Wilson 95 % interval. Targets (issue 5, at 3 % CV, Gaussian):
  pre:  >= 95 % of 5 % steps caught with <= 1 % false rejects;
  soak: <= 5 % false rejects per soak, >= 90 % of 5 % steps caught within 10 runs, median
        delay <= 8 runs.

Usage: python benchmarks/detector_accuracy.py [--quick] [--write-golden]
                                              [--otava-python PATH] [--json FILE]
apache-otava pins numpy 2.2 and pulls cloud clients: give it its own virtualenv, never the
project's (python -m venv /tmp/otava-venv && /tmp/otava-venv/bin/pip install apache-otava).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from certifier.domain.detector import DetectorPolicy, Series, compare_series
from certifier.domain.results import Better

GOLDEN = Path(__file__).parent / "golden" / "detector_accuracy.json"
SEED = 20_240_601
BASELINE_RUNS = 20
PRE_RUNS = 10
SOAK_RUNS = 28
LATEST_ONSET = 18  # a soak change begins at run 0..18, so >= 10 runs follow it
Z95 = 1.959964


@dataclass(frozen=True)
class Noise:
    name: str
    kind: str  # gaussian | lognormal | t3 | ar1 | drift | daily | outliers | latency
    cv: float
    extra: float = 0.0  # outlier share, drift over the series, cycle amplitude

    @property
    def better(self) -> Better:
        return Better.LOWER if self.kind == "latency" else Better.HIGHER


@dataclass(frozen=True)
class Change:
    name: str
    kind: str  # none | step | ramp | variance | dip
    size: float = 0.0
    runs: int = 0  # ramp length or dip length

    @property
    def harmful(self) -> bool:
        """Whether the detector should catch it (dips and variance-only changes: no)."""
        return self.kind in ("step", "ramp")


@dataclass(frozen=True)
class Cell:
    scenario: str  # pre | soak
    noise: Noise
    change: Change
    trials: int

    @property
    def name(self) -> str:
        return f"{self.scenario}/{self.noise.name}/{self.change.name}"


def noise_families(cv: float = 0.03) -> list[Noise]:
    return [
        Noise("gauss 3%", "gaussian", cv),
        Noise("lognormal 3%", "lognormal", cv),
        Noise("t(3) 3%", "t3", cv),
        Noise("AR(1) 0.5 3%", "ar1", cv, 0.5),
        Noise("drift 2% 3%", "drift", cv, 0.02),
        Noise("daily 2% 3%", "daily", cv, 0.02),
        Noise("outliers 1% 3%", "outliers", cv, 0.01),
        Noise("outliers 5% 3%", "outliers", cv, 0.05),
        Noise("latency lognormal 3%", "latency", cv),
    ]


GAUSS1 = Noise("gauss 1%", "gaussian", 0.01)
GAUSS3 = Noise("gauss 3%", "gaussian", 0.03)
GAUSS5 = Noise("gauss 5%", "gaussian", 0.05)
NONE = Change("none", "none")
STEP5 = Change("step 5%", "step", 0.05)


def cells(quick: bool) -> list[Cell]:
    """The grid; ``quick`` keeps the cells CI watches, with fewer trials."""
    out: list[Cell] = []
    for scenario in ("pre", "soak"):
        if quick:
            n = 200
            out += [Cell(scenario, GAUSS3, NONE, 2 * n), Cell(scenario, GAUSS3, STEP5, n),
                    Cell(scenario, GAUSS3, Change("step 2%", "step", 0.02), n),
                    Cell(scenario, GAUSS3, Change("dip 3 runs 10%", "dip", 0.10, 3), n),
                    Cell(scenario, Noise("t(3) 3%", "t3", 0.03), STEP5, n),
                    Cell(scenario, Noise("latency lognormal 3%", "latency", 0.03), STEP5, n),
                    Cell(scenario, Noise("AR(1) 0.5 3%", "ar1", 0.03, 0.5), NONE, n)]
            continue
        key, n = 4000, 1000
        out += [Cell(scenario, GAUSS3, NONE, key), Cell(scenario, GAUSS3, STEP5, key)]
        out += [Cell(scenario, noise, change, n) for noise in noise_families()[1:]
                for change in (NONE, STEP5)]
        out += [Cell(scenario, noise, change, n) for noise in (GAUSS1, GAUSS5)
                for change in (NONE, STEP5)]
        out += [Cell(scenario, GAUSS3, Change(f"step {s}%", "step", s / 100), n)
                for s in (1, 2, 3, 10)]
        out += [Cell(scenario, GAUSS3, Change("ramp 5% over 10", "ramp", 0.05, 10), n),
                Cell(scenario, GAUSS3, Change("variance x2", "variance", 2.0), n)]
        for r, d in ((1, 10), (2, 10), (3, 10), (3, 5)):
            dip = Change(f"dip {r} run{'s' * (r > 1)} {d}%", "dip", d / 100, r)
            out.append(Cell(scenario, GAUSS3, dip, n))
    return out


# --- data ---------------------------------------------------------------------------------

def _noise(rng: np.random.Generator, noise: Noise, total: int) -> np.ndarray:
    """Multiplicative noise around 1 with coefficient of variation ``noise.cv``."""
    z = rng.standard_normal(total)
    cv = noise.cv
    if noise.kind in ("lognormal", "latency"):
        sigma = math.sqrt(math.log1p(cv * cv))
        return np.exp(sigma * z - sigma * sigma / 2)
    if noise.kind == "t3":
        return 1 + cv * rng.standard_t(3, total) / math.sqrt(3)
    if noise.kind == "ar1":
        phi, e = noise.extra, np.empty(total)
        e[0] = z[0]
        for t in range(1, total):
            e[t] = phi * e[t - 1] + math.sqrt(1 - phi * phi) * z[t]
        return 1 + cv * e
    base = 1 + cv * z
    if noise.kind == "drift":
        sign = rng.choice([-1.0, 1.0])
        return base + sign * noise.extra * (np.arange(total) / (total - 1) - 0.5)
    if noise.kind == "daily":
        phase = rng.uniform(0, 2 * math.pi)
        return base + noise.extra * np.sin(2 * math.pi * np.arange(total) / 4 + phase)
    if noise.kind == "outliers":
        return np.where(rng.random(total) < noise.extra, base * 0.85, base)
    return base


def make_series(rng: np.random.Generator, cell: Cell) -> tuple[np.ndarray, int]:
    """Baseline then candidate values, and the candidate run where the change begins."""
    runs = PRE_RUNS if cell.scenario == "pre" else SOAK_RUNS
    total = BASELINE_RUNS + runs
    change = cell.change
    if change.kind == "dip":
        onset = int(rng.integers(0, runs - change.runs + 1))
    elif cell.scenario == "soak" and change.kind != "none":
        onset = int(rng.integers(0, LATEST_ONSET + 1))
    else:
        onset = 0
    e = _noise(rng, cell.noise, total)
    t = np.arange(total) - BASELINE_RUNS - onset  # runs since the change (negative: before)
    if change.kind == "variance":
        e = np.where(t >= 0, 1 + (e - 1) * change.size, e)
    if change.kind == "step":
        w = (t >= 0).astype(float)
    elif change.kind == "ramp":
        w = np.clip((t + 1) / change.runs, 0, 1)
    elif change.kind == "dip":
        w = ((t >= 0) & (t < change.runs)).astype(float)
    else:
        w = np.zeros(total)
    if cell.noise.better is Better.HIGHER:
        return 10.0 * e * (1 - change.size * w), onset
    return 0.5 * e * (1 + change.size * w), onset


def _series(cell: Cell, values: np.ndarray, runs: int) -> Series:
    latency = cell.noise.better is Better.LOWER
    return Series("ping" if latency else "bandwidth", "rtt_avg_ms" if latency else "gbps",
                  "ms" if latency else "Gbit/s", cell.noise.better,
                  tuple(values[:BASELINE_RUNS].tolist()),
                  tuple(values[BASELINE_RUNS:BASELINE_RUNS + runs].tolist()))


# --- statistics ---------------------------------------------------------------------------

def wilson(hits: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(hits: int, n: int) -> dict[str, float]:
    low, high = wilson(hits, n)
    return {"rate": hits / n if n else 0.0, "low": low, "high": high, "hits": hits, "n": n}


@dataclass
class Outcome:
    """One trial: first alarm (candidate runs seen), where the change was located, timings."""

    alarm: int | None
    onset: int
    located: int | None
    check_seconds: float
    checks: int
    locate_seconds: float = 0.0


def _summarise(cell: Cell, outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    early = [o for o in outcomes if o.alarm is not None and o.alarm <= o.onset]
    false = len(early) if cell.change.kind not in ("none", "dip", "variance") else sum(
        o.alarm is not None for o in outcomes)
    delays = sorted(o.alarm - o.onset if o.alarm is not None and o.alarm > o.onset else math.inf
                    for o in outcomes)
    caught = [o for o in outcomes if o.alarm is not None and o.alarm > o.onset]
    located = [abs(o.located - o.onset) for o in caught if o.located is not None]
    checks = sum(o.checks for o in outcomes)
    out: dict[str, Any] = {
        "trials": n,
        "false_reject": rate(false, n),
        "time_per_check_us": 1e6 * sum(o.check_seconds for o in outcomes) / max(1, checks),
        "time_per_locate_ms": 1e3 * sum(o.locate_seconds for o in outcomes) / max(1, len(caught)
                                                                                 + false),
    }
    if cell.change.harmful and cell.scenario == "pre":
        out["catch_10"] = rate(len(caught), n)  # one check of all 10 runs
    elif cell.change.harmful:
        out["catch_5"] = rate(sum(d <= 5 for d in delays), n)
        out["catch_10"] = rate(sum(d <= 10 for d in delays), n)
        out["median_delay"] = _finite(delays[(n - 1) // 2]) if n else None
        out["p90_delay"] = _finite(delays[min(n - 1, math.ceil(0.9 * n) - 1)]) if n else None
    if cell.change.harmful:
        out["located"] = rate(len(located), max(1, len(caught)))
        out["located_within_1"] = rate(sum(e <= 1 for e in located), max(1, len(caught)))
        out["median_location_error"] = (float(np.median(located)) if located else None)
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# --- the detector ---------------------------------------------------------------------------

def _trial(cell: Cell, values: np.ndarray, onset: int) -> Outcome:
    """Run the checks of one trial; time the checks and, apart, locating the change."""
    pre = cell.scenario == "pre"
    policy = DetectorPolicy.pre_promotion() if pre else DetectorPolicy.soak(SOAK_RUNS)
    last = PRE_RUNS if pre else SOAK_RUNS
    onset = onset if cell.change.harmful else last
    took, checks = 0.0, 0
    for k in range(PRE_RUNS if pre else 1, last + 1):
        series = _series(cell, values, k)
        start = time.perf_counter()
        verdict = compare_series(series, policy, locate=False)
        took += time.perf_counter() - start
        checks += 1
        if verdict.regressed:
            start = time.perf_counter()
            located = compare_series(series, policy, locate=True).change_run
            return Outcome(k, onset, located, took, checks, time.perf_counter() - start)
    return Outcome(None, onset, None, took, checks)


def draw(cell: Cell) -> Iterable[tuple[np.ndarray, int]]:
    """The cell's series, the same on every run and for every detector."""
    rng = np.random.default_rng([SEED, zlib.crc32(cell.name.encode())])
    for _ in range(cell.trials):
        yield make_series(rng, cell)


def run_cells(selected: list[Cell],
              progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for cell in selected:
        start = time.perf_counter()
        outcomes = [_trial(cell, values, onset) for values, onset in draw(cell)]
        results[cell.name] = _summarise(cell, outcomes)
        if progress:
            progress(f"{cell.name}: {time.perf_counter() - start:.1f} s")
    return results


# --- apache-otava, in its own interpreter -------------------------------------------------

OTAVA_HELPER = r"""
import json, sys, time
from otava.analysis import compute_change_points
job = json.load(sys.stdin)
m, k_first, worse_lower = job["m"], job["first_check"], job["worse_lower"]
out = []
for values in job["series"]:
    res = {"plain": None, "plain_at": None, "after5": None, "after5_at": None, "calls": 0,
           "seconds": 0.0}
    for k in range(k_first, len(values) - m + 1):
        t = time.perf_counter()
        cps, _ = compute_change_points(values[:m + k], window_len=50, max_pvalue=0.001,
                                       min_magnitude=0.0)
        res["seconds"] += time.perf_counter() - t
        res["calls"] += 1
        for cp in cps:
            if cp.index < m:
                continue
            worse = cp.stats.mean_2 < cp.stats.mean_1 if worse_lower else (
                cp.stats.mean_2 > cp.stats.mean_1)
            if not worse:
                continue
            if res["plain"] is None:
                res["plain"], res["plain_at"] = k, int(cp.index) - m
            if res["after5"] is None and m + k - int(cp.index) >= 5:
                res["after5"], res["after5_at"] = k, int(cp.index) - m
        if res["after5"] is not None:
            break
    out.append(res)
json.dump(out, sys.stdout)
"""


def otava_cells(quick: bool) -> list[Cell]:
    n = 300
    picked = [(GAUSS3, NONE), (GAUSS3, STEP5), (Noise("t(3) 3%", "t3", 0.03), NONE),
              (Noise("outliers 5% 3%", "outliers", 0.03, 0.05), NONE),
              (Noise("AR(1) 0.5 3%", "ar1", 0.03, 0.5), NONE),
              (GAUSS3, Change("dip 3 runs 10%", "dip", 0.10, 3))]
    return [Cell(s, noise, change, 4000 if (noise, change) in ((GAUSS3, NONE), (GAUSS3, STEP5))
                 and not quick else n)
            for s in ("pre", "soak") for noise, change in picked]


def run_otava(python: str, selected: list[Cell], quick: bool,
              progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Otava's E-Divisive (Hunter variant, its defaults) on the very same series.

    An alarm is a change point in the candidate's runs in the worse direction: "plain" at the
    first check that shows one, "after5" only once at least 5 runs follow it.
    """
    results: dict[str, dict[str, Any]] = {}
    for cell in selected:
        cell = Cell(cell.scenario, cell.noise, cell.change, min(cell.trials, 300 if not quick
                                                                 else 100))
        drawn = list(draw(Cell(cell.scenario, cell.noise, cell.change, cell.trials)))
        job = {"m": BASELINE_RUNS, "worse_lower": cell.noise.better is Better.HIGHER,
               "first_check": PRE_RUNS if cell.scenario == "pre" else 1,
               "series": [v[:BASELINE_RUNS + (PRE_RUNS if cell.scenario == "pre" else SOAK_RUNS)]
                          .tolist() for v, _ in drawn]}
        start = time.perf_counter()
        done = subprocess.run([python, "-c", OTAVA_HELPER], input=json.dumps(job), text=True,
                              capture_output=True, timeout=3600, check=True)
        raw = json.loads(done.stdout)
        for variant in ("plain", "after5"):
            outcomes = [
                Outcome(r[variant], onset if cell.change.harmful else SOAK_RUNS + PRE_RUNS,
                        r[f"{variant}_at"], r["seconds"], r["calls"])
                for r, (_, onset) in zip(raw, drawn, strict=True)
            ]
            results[f"{cell.name} [otava {variant}]"] = _summarise(cell, outcomes)
        if progress:
            progress(f"otava {cell.name}: {time.perf_counter() - start:.1f} s")
    return results


# --- report -------------------------------------------------------------------------------

def _pct(r: dict[str, float] | None) -> str:
    if r is None:
        return "-"
    return f"{100 * r['rate']:5.1f} [{100 * r['low']:4.1f}-{100 * r['high']:5.1f}]"


def _delay(r: dict[str, Any], key: str) -> str:
    if key not in r:
        return "-"
    return "never" if r[key] is None else f"{r[key]:g}"


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (f"{'cell':52} {'n':>5}  {'false reject %':18} {'caught <=5 %':18} "
            f"{'caught <=10 %':18} {'med':>5} {'p90':>5}  {'loc +-1 %':18} {'us/check':>8}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lines.append(
            f"{name:52} {r['trials']:5d}  {_pct(r['false_reject']):18} {_pct(r.get('catch_5')):18} "
            f"{_pct(r.get('catch_10')):18} {_delay(r, 'median_delay'):>5} "
            f"{_delay(r, 'p90_delay'):>5}  "
            f"{_pct(r.get('located_within_1')):18} {r['time_per_check_us']:8.0f} "
            f"{r.get('time_per_locate_ms', 0.0):6.1f}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    text: str
    cell: str
    field: str
    bound: float
    at_most: bool

    def judge(self, results: dict[str, dict[str, Any]]) -> str:
        r = results.get(self.cell)
        if r is None or self.field not in r:
            return f"{self.text}: not measured"
        value = r[self.field]
        measured = value["rate"] if isinstance(value, dict) else value
        if measured is None:
            measured = math.inf
        ok = measured <= self.bound if self.at_most else measured >= self.bound
        scale, unit = (100, "%") if isinstance(value, dict) else (1, " runs")
        shown = f"{scale * measured:.1f}{unit}"
        if ok:
            return f"{self.text}: MET ({shown})"
        gap = abs(measured - self.bound) * scale
        return f"{self.text}: MISSED by {gap:.1f}{unit.strip() or ''} ({shown})"


def targets(noise: str = "gauss 3%") -> list[Target]:
    return [
        Target(f"pre  [{noise}] catch of a 5 % step >= 95 %", f"pre/{noise}/step 5%",
               "catch_10", 0.95, False),
        Target(f"pre  [{noise}] false rejects <= 1 %", f"pre/{noise}/none", "false_reject",
               0.01, True),
        Target(f"soak [{noise}] false rejects per soak <= 5 %", f"soak/{noise}/none",
               "false_reject", 0.05, True),
        Target(f"soak [{noise}] 5 % steps caught within 10 runs >= 90 %",
               f"soak/{noise}/step 5%", "catch_10", 0.90, False),
        Target(f"soak [{noise}] median delay <= 8 runs", f"soak/{noise}/step 5%",
               "median_delay", 8, True),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cells and trials (CI)")
    parser.add_argument("--write-golden", action="store_true",
                        help=f"store this mode's results in {GOLDEN.name}")
    parser.add_argument("--otava-python", metavar="PATH",
                        help="python of a separate virtualenv with apache-otava installed")
    parser.add_argument("--json", metavar="FILE", help="also write all results here")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    mode = "quick" if args.quick else "full"
    results = run_cells(cells(args.quick), say)
    print(f"detector ({mode}): soak level per check "
          f"{DetectorPolicy.soak(SOAK_RUNS).level(BASELINE_RUNS):.4g}, "
          f"pre-promotion level {DetectorPolicy.pre_promotion().level(BASELINE_RUNS):g}")
    for scenario in ("pre", "soak"):
        print(f"\n== {scenario} ==")
        print(table({k: v for k, v in results.items() if k.startswith(scenario + "/")}))
    print("\nTargets (issue 5, 3 % CV Gaussian):")
    for target in targets():
        print("  " + target.judge(results))
    if not args.quick:
        print("\nThe same targets on the other noise families at 3 % CV (not required):")
        for noise in noise_families()[1:]:
            for target in targets(noise.name):
                print("  " + target.judge(results))
    otava: dict[str, dict[str, Any]] = {}
    if args.otava_python:
        try:
            otava = run_otava(args.otava_python, otava_cells(args.quick), args.quick, say)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            reason = getattr(exc, "stderr", None) or str(exc)
            print(f"\notava: not measured ({str(reason).strip().splitlines()[-1]})")
    else:
        print("\notava: not measured (no --otava-python given)")
    if otava:
        for scenario in ("pre", "soak"):
            print(f"\n== {scenario}: apache-otava 0.8 E-Divisive, window 50, p 0.001 ==")
            print(table({k: v for k, v in otava.items() if k.startswith(scenario + "/")}))
    if args.json:
        Path(args.json).write_text(json.dumps({"detector": results, "otava": otava}, indent=1))
    if args.write_golden:
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        golden[mode] = results
        if otava:
            golden[f"otava_{mode}"] = otava
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        print(f"\nwrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
