"""The suites a run executes, one module each, and the registry the runner looks them up in.

Every suite is ``run(testbed, options) -> SuiteResult`` and never raises for tool problems: a
missing binary, a timeout or garbage output becomes ``SuiteResult.infra_error`` (retried, never
blamed on the candidate), while what the candidate broke becomes failed checks or measurements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from certifier.domain.results import SuiteResult
from workers.suites import bandwidth, ping, storage, upgrade
from workers.testbed.base import Testbed

SuiteRunner = Callable[[Testbed, Any], SuiteResult]

SUITES: dict[str, tuple[SuiteRunner, type[Any]]] = {
    "ping": (ping.run, ping.PingOptions),
    "bandwidth": (bandwidth.run, bandwidth.BandwidthOptions),
    "storage": (storage.run, storage.StorageOptions),
    "upgrade": (upgrade.run, upgrade.UpgradeOptions),  # needs a plan: the runner builds options
}

__all__ = ["SUITES", "SuiteRunner"]
