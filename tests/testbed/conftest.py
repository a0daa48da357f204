"""Fixtures for testbed tests: unique tags and subnets, a shared records folder, skip markers.

Tests that need root or a tool skip with a reason on a developer machine, but under ``CI=true``
they run regardless and fail loudly: CI must never go green by skipping the real testbed.

All tests share one records folder, so that a janitor test never mistakes a testbed built by a
test running in parallel for an orphan; janitor tests also name the orphan tags they may delete.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workers.testbed.base import Testbed, TestbedSpec, create_testbed

IN_CI = bool(os.environ.get("CI"))
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(
    not IS_ROOT and not IN_CI,
    reason="needs root for network namespaces (runs, and must pass, under CI=true)")


def needs_binary(*names: str) -> pytest.MarkDecorator:
    missing = [n for n in names if shutil.which(n) is None]
    return pytest.mark.skipif(
        bool(missing) and not IN_CI,
        reason=f"needs {', '.join(missing)} installed (apt-get install iproute2 iputils-ping "
               "iperf3 fio); required under CI=true")


RECORDS_DIR = Path(tempfile.gettempdir()) / f"certifier-test-records-{os.getuid()}"
_subnets = itertools.count((os.getpid() * 7) % 200)


def unique_tag() -> str:
    return "t" + secrets.token_hex(4)


def unique_subnet() -> str:
    """198.19.<n>.0/24, different for each test of this process (testbeds are isolated anyway)."""
    return f"198.19.{next(_subnets) % 250 + 1}.0/24"


def our_namespaces(tag: str) -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=True, timeout=10).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"cf-{tag}-")]


@pytest.fixture
def records_dir() -> Path:
    RECORDS_DIR.mkdir(parents=True, exist_ok=True)
    return RECORDS_DIR


@pytest.fixture
def tag() -> str:
    return unique_tag()


@pytest.fixture
def make_testbed(tmp_path: Path, records_dir: Path) -> Iterator[Callable[..., Testbed]]:
    """Build testbeds with fresh tags and subnets; whatever a test leaves is torn down."""
    built: list[Testbed] = []

    def build(driver: str = "netns", **spec_args: object) -> Testbed:
        spec_args.setdefault("subnet", unique_subnet())
        spec = TestbedSpec(name="test", driver=driver, **spec_args)  # type: ignore[arg-type]
        tag = unique_tag()
        bed = create_testbed(spec, tag=tag, state_dir=tmp_path / tag, records_dir=records_dir)
        built.append(bed)
        return bed

    yield build
    for bed in built:
        bed.teardown()
