"""What a test needs from the machine, said once: root, binaries, servers.

Outside CI a missing piece skips the test with a reason; under ``CI=true`` the test runs anyway
and fails loudly, because CI must never go green by skipping the real testbed, a backend or the
browser.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(
    not IS_ROOT and not IN_CI,
    reason="needs root for network namespaces (runs, and must pass, under CI=true)")


def needs_binary(*names: str) -> pytest.MarkDecorator:
    missing = [n for n in names if shutil.which(n) is None]
    return pytest.mark.skipif(
        bool(missing) and not IN_CI,
        reason=f"needs {', '.join(missing)} installed (./dev test installs them); "
               "required under CI=true")


def unavailable(reason: str) -> NoReturn:
    """Skip for ``reason`` on a workstation; fail under CI=true."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)", pytrace=False)
    pytest.skip(reason)
