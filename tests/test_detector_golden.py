"""The detector's accuracy stays where the golden run left it (benchmarks/detector_accuracy.py).

Runs the benchmark's quick mode (fixed seeds, so the same numbers every time) and fails when a
rate leaves the Wilson 95 % interval stored for it, or a median delay moves by more than a run.
After a deliberate change to the detector, run
``python benchmarks/detector_accuracy.py --quick --write-golden`` and commit the new file.
"""

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "detector_accuracy.py"
RATES = ("false_reject", "catch_5", "catch_10", "located_within_1")


def load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("detector_accuracy", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measured_and_golden() -> tuple[dict[str, Any], dict[str, Any]]:
    bench = load_benchmark()
    golden = json.loads(bench.GOLDEN.read_text())["quick"]
    return bench.run_cells(bench.cells(quick=True)), golden


def test_quick_benchmark_covers_the_same_cells_as_the_golden_run(
    measured_and_golden: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    measured, golden = measured_and_golden
    assert sorted(measured) == sorted(golden)


def test_every_rate_stays_inside_its_golden_wilson_interval(
    measured_and_golden: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    measured, golden = measured_and_golden
    moved = [
        f"{cell} {rate}: {got:.3f} outside [{want[rate]['low']:.3f}, {want[rate]['high']:.3f}]"
        for cell, want in golden.items()
        for rate in RATES
        if rate in want
        for got in [measured.get(cell, {}).get(rate, {}).get("rate", -1.0)]
        if not want[rate]["low"] <= got <= want[rate]["high"]
    ]
    assert moved == []


def test_median_delays_stay_within_one_run_of_the_golden_run(
    measured_and_golden: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    measured, golden = measured_and_golden
    for cell, want in golden.items():
        if want.get("median_delay") is not None:
            got = measured[cell]["median_delay"]
            assert got is not None and abs(got - want["median_delay"]) <= 1, cell
