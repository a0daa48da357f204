"""Fixtures for suite tests: captured tool output, a scripted fake testbed, skip markers.

Like the testbed tests, tests that need root or a tool skip outside CI and must run under
``CI=true``. The fake testbed answers ``run`` from a script, so the suites' handling of broken
tools (garbage, truncation, timeouts, missing binaries) is tested without breaking real tools.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest

from workers.testbed.base import CommandResult, Host, Scratch, Target, Testbed, TestbedSpec
from workers.testbed.factory import create_testbed

DATA = Path(__file__).parent / "data"


RECORDS_DIR = Path(tempfile.gettempdir()) / f"certifier-test-records-{os.getuid()}"
_subnets = itertools.count((os.getpid() * 7 + 100) % 200)


def data(name: str) -> str:
    return (DATA / name).read_text()


def result(argv: list[str], stdout: str = "", stderr: str = "",
           returncode: int = 0) -> CommandResult:
    return CommandResult(tuple(argv), returncode, stdout, stderr, False, 0.01)


Responder = Callable[[list[str], str | None], CommandResult]


class FakeTestbed(Testbed):
    """A testbed whose ``run`` is answered by ``responder``; ``spawn`` starts a real sleeper.

    Every ``run`` call is kept in ``calls`` as (argv, host).
    """

    driver = "local"

    def __init__(self, tmp_path: Path, responder: Responder,
                 targets: list[Target] | None = None) -> None:
        super().__init__(TestbedSpec(name="fake", driver="local"), tag="fake",
                         state_dir=tmp_path / "state", records_dir=tmp_path / "records")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.responder = responder
        self.calls: list[tuple[list[str], str | None]] = []
        self.spawned: list[subprocess.Popen[bytes]] = []
        self._targets = targets

    def targets(self) -> list[Target]:
        return self._targets if self._targets is not None else super().targets()

    def scratch(self, data_bytes: int, host: str | None = None) -> Scratch:
        folder = self.state_dir / "scratch"
        folder.mkdir(exist_ok=True)
        return Scratch(PurePosixPath(folder), "plain folder (fake testbed)")

    def _make_hosts(self) -> tuple[Host, ...]:
        return (Host("h1", "198.18.0.11", None), Host("h2", "198.18.0.12", None))

    def _build(self) -> None:
        pass

    def _destroy(self) -> None:
        pass

    def run(self, argv: list[str], *, host: str | None = None, timeout: float,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> CommandResult:
        self.calls.append((list(argv), host))
        return self.responder(list(argv), host)

    def spawn(self, argv: list[str], *, host: str | None = None,
              log_path: Path) -> subprocess.Popen[bytes]:
        proc = super().spawn(["sleep", "60"], host=None, log_path=log_path)
        self.spawned.append(proc)
        return proc


@pytest.fixture
def fake_testbed(tmp_path: Path) -> Iterator[Callable[..., FakeTestbed]]:
    beds: list[FakeTestbed] = []

    def build(responder: Responder, targets: list[Target] | None = None) -> FakeTestbed:
        bed = FakeTestbed(tmp_path, responder, targets)
        beds.append(bed)
        return bed

    yield build
    for bed in beds:
        for proc in bed.spawned:
            proc.kill()
            proc.wait()


@pytest.fixture
def make_testbed(tmp_path: Path) -> Iterator[Callable[..., Testbed]]:
    """Real testbeds with fresh tags and subnets, always torn down."""
    built: list[Testbed] = []
    RECORDS_DIR.mkdir(parents=True, exist_ok=True)

    def build(driver: str = "netns", **spec_args: object) -> Testbed:
        spec_args.setdefault("subnet", f"198.19.{next(_subnets) % 250 + 1}.0/24")
        spec = TestbedSpec(name="test", driver=driver, **spec_args)  # type: ignore[arg-type]
        tag = "s" + secrets.token_hex(4)
        bed = create_testbed(spec, tag=tag, state_dir=tmp_path / tag, records_dir=RECORDS_DIR)
        built.append(bed)
        return bed

    yield build
    for bed in built:
        bed.teardown()
