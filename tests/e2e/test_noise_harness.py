"""The noise harness at CI size: harmless commits on a busy machine are not rejected.

``benchmarks/noise_harness.py`` drives the real pipeline on real namespaces while ``stress-ng``
keeps the host busy. Here it runs small: one harmless candidate (a README line) on an idle host
and one beside 2 busy CPU and disk workers (the full size adds level 1), with a soak of one run
(no extension), moving on after 2 runs on a testbed too busy to judge, and one functional
breakage (a route that cuts a host off) at the busiest level. The test fails on a false
rejection, on culprit finding naming a harmless commit, and on a breakage that passes or is
rejected for another reason. The full size (30 harmless per level, six breakages, levels 0, 1
and 2) is ``./dev bench``'s.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from benchmarks import noise_harness
from tests.requirements import unavailable

pytestmark = [pytest.mark.root, pytest.mark.e2e]


def _require() -> None:
    if os.geteuid() != 0:
        unavailable("the noise harness builds a netns testbed and needs root")
    tools = ("ip", "tc", "ping", "iperf3", "fio", "git", "stress-ng", "nft")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        unavailable(f"the noise harness needs {', '.join(missing)} (./dev test installs them)")


@pytest.mark.timeout(1800)
def test_harmless_commits_on_a_busy_machine_are_not_rejected(tmp_path: Path) -> None:
    _require()
    route = next(b for b in noise_harness.BREAKAGES if b.name == "unreachable route")
    said: list[str] = []
    figures = noise_harness.run(tmp_path, levels=(0, 2), harmless=1, breakages={2: (route,)},
                                soak_runs=1, max_extra_runs=0, busy_patience=2, seed=5,
                                subnet="198.18.213.0/24", say=said.append)
    print("\n".join(said))  # shown by pytest when the test fails
    assert figures["failures"] == []
    levels = figures["levels"]
    assert [s["harmless"] for s in levels] == [1, 1]
    for s in levels:
        assert s["rejected"] == 0, s["false_rejections"]
        assert s["culprit_named_harmless"] == 0
        # a harmless candidate is promoted, or waits saying why (a testbed too busy to judge)
        assert s["promoted"] + s["waiting"] == 1
    assert levels[0]["promoted"] == 1  # an idle machine has no reason to wait
    cut = levels[1]["breakages"]["unreachable route"]
    assert cut["end"] == "rejected" and cut["fitting"], cut
    # The gate's wall time runs from the candidate's forming to the end of the run that
    # decided it: at least its first gate run, at most its gate runs and a few seconds (not the
    # soak's first run, which the same step goes on with).
    calm = next(c for c in levels[0]["candidates"] if c["kind"] == "harmless")
    assert calm["gate_run_s"] and calm["gate_wall_s"] is not None, calm
    first_gate = calm["gate_run_s"][0]
    assert first_gate <= calm["gate_wall_s"] <= sum(calm["gate_run_s"]) + 5, calm
