"""Fixtures for testbed tests: unique tags and subnets, a shared records folder, skip markers.

Tests that need root or a tool skip with a reason on a developer machine, but under ``CI=true``
they run regardless and fail loudly: CI must never go green by skipping the real testbed.

All tests share one records folder, so that a janitor test never mistakes a testbed built by a
test running in parallel for an orphan; janitor tests also name the orphan tags they may delete.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.requirements import IS_ROOT
from workers.testbed.base import Testbed, TestbedSpec
from workers.testbed.factory import create_testbed

KERNEL_PROBES = {
    "netem": ["tc", "-n", "{ns}", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
    "gretap": ["ip", "-n", "{ns}", "link", "add", "g0", "type", "gretap", "local", "198.18.0.1",
               "remote", "198.18.0.2", "key", "1"],
}


@functools.cache
def kernel_has(feature: str) -> bool:
    """Can this kernel do ``feature``? Probed in a throwaway namespace (outside our prefix)."""
    if not IS_ROOT or shutil.which("ip") is None:
        return False
    ns = f"probe{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        argv = [a.format(ns=ns) for a in KERNEL_PROBES[feature]]
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)


RECORDS_DIR = Path(tempfile.gettempdir()) / f"certifier-test-records-{os.getuid()}"
_subnets = itertools.count((os.getpid() * 7) % 200)


def unique_tag() -> str:
    return "t" + secrets.token_hex(4)


def unique_subnet() -> str:
    """198.19.<n>.0/24, different for each test of this process (testbeds are isolated anyway)."""
    return f"198.19.{next(_subnets) % 250 + 1}.0/24"


def our_links(tag: str) -> list[str]:
    """Our links in the root namespace (a topology's controller link is ``cf-<tag>``)."""
    listing = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                             check=True, timeout=10).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in listing.splitlines()]
    return [n for n in names if n == f"cf-{tag}"]


def loops_of(image: Path) -> list[str]:
    listing = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True,
                             check=False, timeout=10).stdout
    return [line.split(":")[0] for line in listing.splitlines() if line.startswith("/dev/")]


def is_mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path)
               for line in Path("/proc/self/mounts").read_text().splitlines())


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
        if "topology" not in spec_args and driver != "ssh":
            spec_args.setdefault("subnet", unique_subnet())
        spec = TestbedSpec(name="test", driver=driver, **spec_args)  # type: ignore[arg-type]
        tag = unique_tag()
        bed = create_testbed(spec, tag=tag, state_dir=tmp_path / tag, records_dir=records_dir)
        built.append(bed)
        return bed

    yield build
    for bed in built:
        bed.teardown()
