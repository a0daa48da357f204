"""Shared by the recipe, upgrade and fault tests: recipes on disk, upstream repos, and a runner
harness — a real SQLite database, real services and the real runner, on a real testbed.

What needs root or a tool skips on a workstation and fails under ``CI=true`` (as in
``tests/testbed``): CI must never go green by skipping the real testbed.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from certifier.db import migrate, models
from certifier.db.session import session_scope
from certifier.demo import world as demo_world
from certifier.domain.clock import SystemClock
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import components, knowngood, runs, scheduler, toolbox
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import (
    AbConfig,
    CertifierConfig,
    ComponentConfig,
    EnvironmentConfig,
    PingSuiteConfig,
    SchedulerConfig,
    Settings,
    SoakConfig,
    SuitesConfig,
    TestbedConfig,
    ThresholdsConfig,
    UpgradeSuiteConfig,
)
from workers import checkout, runner
from workers.context import WorkerContext
from workers.recipes import Deployable
from workers.testbed.netns import list_namespaces

# 198.19.<n>.0/24 from the top, away from tests/testbed's counter that starts low.
_subnets = itertools.count((os.getpid() * 13) % 100)


def unique_subnet() -> str:
    return f"198.19.{250 - next(_subnets) % 100}.0/24"


def write_hook(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body if body.startswith("#!") else "#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def deployable(tmp_path: Path, repo: Path, name: str, sha: str, recipe: Path) -> Deployable:
    """Component ``name`` of ``repo`` checked out at ``sha`` under ``tmp_path``, as the runner
    checks it out, with its recipe: what the upgrade suite deploys."""
    tree = checkout.checkout(tmp_path / "mirrors", name, str(repo), sha,
                             tmp_path / "src" / sha[:12] / name)
    return Deployable(name, sha, tree, recipe)


def link_cut(tmp_path: Path, seconds: float) -> Deployable:
    """Component ``net``, whose upgrade takes h2's data-plane link down for ``seconds``: an
    outage of known length for the upgrade suite to measure."""
    repo, sha = git_repo(tmp_path / "net", {"version": "1\n"})
    recipe = tmp_path / "recipe"
    write_hook(recipe, "deploy", "true")
    write_hook(recipe, "upgrade", 'ip -n "$CERTIFIER_HOST_H2_NS" link set dev eth0 down\n'
                                  f"sleep {seconds:g}\n"
                                  'ip -n "$CERTIFIER_HOST_H2_NS" link set dev eth0 up')
    return deployable(tmp_path, repo, "net", sha, recipe)


def git_repo(path: Path, files: dict[str, str], message: str = "first") -> tuple[Path, str]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "-C", str(path), "init", "-q", "-b", "main"], check=True,
                   capture_output=True, timeout=30)
    return path, demo_world.commit(path, files, message)


@dataclass
class Harness:
    """One worker's view of a pipeline: settings, context, and helpers to drive runs."""

    settings: Settings
    ctx: WorkerContext
    dispatcher: RecordingDispatcher
    clock: SystemClock = field(default_factory=SystemClock)

    def report(self, component: str, sha: str, title: str = "") -> None:
        with session_scope(self.ctx.session_factory) as session:
            components.report_commit(session, component, sha, self.clock, title=title,
                                     seen_via="api")

    def reconcile(self) -> scheduler.ReconcileReport:
        with session_scope(self.ctx.session_factory) as session:
            return scheduler.reconcile(session, self.clock, self.ctx.scheduler_policy,
                                       self.dispatcher)

    def gate_run(self) -> int:
        """Form and board a candidate from the reported heads; its gate run's id."""
        report = self.reconcile()
        assert report.runs_created, f"expected a gate run: {report}"
        return report.runs_created[-1]

    def execute(self, run_id: int) -> models.Run:
        assert runner.execute(self.ctx, run_id) is runs.Claim.CLAIMED
        return self.run(run_id)

    def run(self, run_id: int) -> models.Run:
        with session_scope(self.ctx.session_factory) as session:
            run = runs.get_run(session, run_id)
            _ = (run.checks, run.measurements)
            session.expunge_all()
            return run

    def promote(self, run_id: int) -> int:
        """Make the candidate of ``run_id`` the next known-good (as a passed soak would)."""
        with session_scope(self.ctx.session_factory) as session:
            cand = runs.get_run(session, run_id).candidate
            toolbox.move(session, cand, CandidateState.SOAKING, self.clock)
            kg = knowngood.promote(session, cand, self.clock, reason="test")
            toolbox.move(session, cand, CandidateState.PROMOTED, self.clock)
            return kg.version

    def testbed_lease(self) -> tuple[int | None, Any]:
        with session_scope(self.ctx.session_factory) as session:
            bed = session.scalars(select(models.Testbed)).one()
            return bed.leased_by_run_id, bed.lease_expires_at


def harness(tmp_path: Path, comps: dict[str, tuple[Path, Path | None]], *,
            driver: str = "local", suites: tuple[str, ...] = (),
            hook_timeout: timedelta = timedelta(seconds=30),
            upgrade: UpgradeSuiteConfig | None = None, run_in: str = "controller",
            environment: EnvironmentConfig | None = None,
            ping: PingSuiteConfig | None = None, ab: AbConfig | None = None,
            thresholds: ThresholdsConfig | None = None, **settings_args: Any) -> Harness:
    """A migrated SQLite database with ``comps`` (name → (repo, recipe)) and one testbed.

    The environment check is off unless ``environment`` is given: these runs test recipes and
    suites, and must not turn ``infra_error`` because the machine running the tests is busy
    (tests/environment/test_runner_environment.py runs it for real).
    """
    config = CertifierConfig(
        components=tuple(ComponentConfig(name=name, url=str(repo), recipe=recipe,
                                         run_in=run_in)  # type: ignore[arg-type]
                         for name, (repo, recipe) in comps.items()),
        testbeds=(TestbedConfig(name="bed", driver=driver,  # type: ignore[arg-type]
                                subnet=unique_subnet()),),
        soak=SoakConfig(infra_backoff=timedelta(seconds=1)),
        suites=SuitesConfig(enabled=suites,  # type: ignore[arg-type]
                            upgrade=upgrade or UpgradeSuiteConfig(settle_s=0.2),
                            ping=ping or PingSuiteConfig()),
        ab=ab or AbConfig(),
        thresholds=thresholds or ThresholdsConfig(),
        scheduler=SchedulerConfig(hook_timeout=hook_timeout),
        environment=environment or EnvironmentConfig(enabled=False),
    )
    settings = Settings(data_dir=tmp_path / "data", config=config, **settings_args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    dispatcher = RecordingDispatcher()
    ctx = WorkerContext(settings, dispatcher=dispatcher)
    with session_scope(ctx.session_factory) as session:
        components.sync_from_config(session, config.components, config.testbeds, SystemClock())
        _start_ids_at(session, 1000 + (os.getpid() * 7 + next(_id_blocks) * 100) % 8000)
    return Harness(settings, ctx, dispatcher)


_id_blocks = itertools.count()


def _start_ids_at(session: Any, first: int) -> None:
    """Make new runs start at id ``first``: testbed tags are ``r<run id>``, and a fresh database
    would otherwise tag its first run ``r1`` — the same as a demo running on this machine."""
    now = SystemClock().now()
    session.add(models.Combination(hash="0" * 64, created_at=now))
    session.flush()
    session.add(models.Candidate(id=first - 1, combination_hash="0" * 64,
                                 state=CandidateState.CANCELLED, changed=[], excuses=[],
                                 created_at=now, updated_at=now, finished_at=now))
    session.flush()
    session.add(models.Run(id=first - 1, candidate_id=first - 1, kind="gate", attempt=1,
                           state=runs.RunState.FINISHED, verdict="infra_error", created_at=now))
    session.flush()


def namespaces_of(tag: str) -> list[str]:
    """The namespaces of testbed ``tag`` (``cf-<tag>-<host>``)."""
    return [name for name in list_namespaces() if name.startswith(f"cf-{tag}-")]


def namespaces_of_instance(prefix: str) -> list[str]:
    """The namespaces of every tag starting with ``prefix`` (an instance's run-tag prefix):
    its runs', their control twins' and their calibration probes'."""
    return [name for name in list_namespaces() if name.startswith(f"cf-{prefix}")]
