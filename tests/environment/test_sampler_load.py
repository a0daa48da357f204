"""The sampler on the real kernel: a span while ``stress-ng`` loads every core shows more cpu
pressure than a span without it.

Not a timed assertion: two measured figures are compared, with a generous margin (the loaded
span must take away at least half of the idle span's headroom below 100 %).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.requirements import IN_CI, needs_binary, unavailable
from workers.environment import read_sample, span_figures


def _span(seconds: float) -> dict[str, Any]:
    start = read_sample()
    time.sleep(seconds)
    return span_figures(start, read_sample())


@needs_binary("stress-ng")
def test_a_span_under_cpu_load_shows_more_cpu_pressure_than_an_idle_one() -> None:
    if not Path("/proc/pressure/cpu").exists():
        unavailable("this kernel has no /proc/pressure (CONFIG_PSI off, or a container)")
    idle = _span(3.0)["cpu_pressure_pct"]
    assert idle is not None
    if idle > 80 and not IN_CI:
        pytest.skip(f"the host is already busy ({idle:.0f} % cpu pressure without our load): "
                    "no headroom left to show more")
    workers = 2 * (os.cpu_count() or 1)  # more runnable tasks than cores: someone always waits
    stress = subprocess.Popen(["stress-ng", "--cpu", str(workers), "--timeout", "10"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        time.sleep(0.5)  # let its workers start
        loaded = _span(3.0)["cpu_pressure_pct"]
    finally:
        os.killpg(stress.pid, signal.SIGKILL)
        stress.wait(timeout=10)
    assert loaded is not None
    assert loaded >= idle + (100 - idle) / 2, f"idle {idle} %, loaded {loaded} %"
