"""Shared by the upgrade tests: a netns testbed of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.testbed.base import Testbed, TestbedSpec
from workers.testbed.factory import create_testbed

from ..recipes.helpers import unique_subnet


@pytest.fixture
def netns_bed(tmp_path: Path) -> Iterator[Testbed]:
    bed = create_testbed(TestbedSpec(name="t", driver="netns", subnet=unique_subnet()),
                         tag=f"u{abs(hash(tmp_path)) % 10**8}", state_dir=tmp_path / "state",
                         records_dir=tmp_path / "records")
    yield bed
    bed.teardown()
