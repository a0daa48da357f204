"""The noise harness (benchmarks/noise_harness.py) in its CI size: harmless commits are never
rejected and real breakages never pass, with the host idle and loaded by stress-ng.

One harmless candidate per load level (0, 1 and 2 busy CPU + IO workers), the three functional
breakages (MTU mismatch, unreachable route, an upgrade that loses data) at every level and the
6 % tc rate cut at the idle level, each on real netns runs driven in-process with an injected
clock (no Redis, no worker processes). A breakage may wait where the environment check finds the
testbed too busy, but only saying why; a promoted breakage or a rejected harmless commit fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from benchmarks import noise_harness
from tests.recipes.helpers import unique_subnet
from tests.requirements import unavailable

# Real runs: about one gate and ten soak runs per candidate, a few seconds each.
pytestmark = [pytest.mark.e2e, pytest.mark.root, pytest.mark.timeout(2400)]


def _require() -> None:
    if os.geteuid() != 0:
        unavailable("the noise harness builds a netns testbed and needs root")
    tools = ("ip", "tc", "ping", "iperf3", "fio", "git", "nft", "stress-ng")
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        unavailable(f"the noise harness needs {', '.join(missing)} (./dev test installs them)")


def test_harmless_commits_pass_and_breakages_are_caught_or_wait_at_every_load_level(
        tmp_path: Path) -> None:
    _require()
    levels = (0, 1, 2)
    figures = noise_harness.run(tmp_path, levels=levels, harmless=1,
                                breakages=noise_harness.ci_breakages(levels), soak_runs=10,
                                seed=12, subnet=unique_subnet())
    print(noise_harness.table(figures["levels"]))
    harmless_rejected = [f for level in figures["levels"] for f in level["false_rejections"]]
    assert harmless_rejected == []
    assert figures["failures"] == []
