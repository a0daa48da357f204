"""Executing one run: lease a testbed, check out the combination, deploy it, run the suites, judge.

Everything here is in service of one promise: whatever happens — a hook fails, a tool is missing, a
timeout hits, the code has a bug — the run ends with a verdict and the testbed is torn down. Only
the candidate's own doing (its deploy hook failing, a check failing, a regression) counts against
it; the rest is ``infra_error``.
"""

from __future__ import annotations

import logging
import os
import shutil
import traceback
from datetime import timedelta
from pathlib import Path

from certifier.db.session import session_scope
from certifier.domain.judgement import Verdict
from certifier.domain.results import Check, SuiteResult
from certifier.pipeline import runs
from certifier.pipeline.dispatch import reconcile_after_commit
from certifier.settings import Settings, TestbedConfig
from workers import checkout
from workers.context import WorkerContext
from workers.suites import SUITES
from workers.testbed.base import InfraError, Testbed, TestbedError, TestbedSpec, create_testbed
from workers.testbed.hooks import run_hook

log = logging.getLogger(__name__)


class RunLog:
    """The run's own log, stored with the run and shown over the API."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        log.info("%s", text)
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines)


def _spec(settings: Settings, name: str, out: RunLog) -> TestbedSpec:
    config = next((t for t in settings.config.testbeds if t.name == name), None)
    if config is None:
        raise InfraError(f"testbed {name!r} is in the database but not in the config file")
    driver = config.driver
    if driver == "netns" and os.geteuid() != 0:
        out.add("testbed: not root, so the netns driver cannot run; falling back to the local "
                "driver (loopback only: shaping and routing recipes have no effect)")
        driver = "local"
    return _to_spec(config, driver)


def _to_spec(config: TestbedConfig, driver: str) -> TestbedSpec:
    return TestbedSpec(name=config.name, driver=driver, hosts=config.hosts,  # type: ignore[arg-type]
                       subnet=config.subnet, mtu=config.mtu)


def _suite_options(settings: Settings, name: str) -> object:
    _, options_cls = SUITES[name]
    cfg = settings.config.suites
    if name == "ping":
        return options_cls(count=cfg.ping.count, interval=cfg.ping.interval)
    if name == "bandwidth":
        return options_cls(duration_s=cfg.bandwidth.duration_s, streams=cfg.bandwidth.streams,
                           pairs=cfg.bandwidth.pairs)
    return options_cls(size=cfg.storage.size, runtime_s=cfg.storage.runtime_s)


def _deploy(ctx: WorkerContext, plan: runs.RunPlan, bed: Testbed, trees: dict[str, Path],
            out: RunLog) -> SuiteResult:
    """Run each component's deploy hook; a failing hook is the candidate's failure, not infra."""
    result = SuiteResult(suite="deploy")
    timeout = ctx.settings.config.scheduler.hook_timeout.total_seconds()
    for comp in plan.components:
        if not comp.recipe:
            continue
        hook = Path(comp.recipe) / "deploy"
        env = {**bed.hook_env(), "CERTIFIER_COMPONENT": comp.name, "CERTIFIER_COMMIT": comp.sha,
               "CERTIFIER_CHECKOUT": str(trees[comp.name]), "CERTIFIER_RUN_ID": str(plan.run_id),
               "CERTIFIER_RUN_KIND": str(plan.kind)}
        targets: list[str | None] = (
            [h.name for h in bed.hosts] if comp.run_in == "hosts" else [None])
        for host in targets:
            where = f" on {host}" if host else ""
            hook_env = {**env, "CERTIFIER_HOST": host} if host else env
            done = run_hook(bed, hook, [], env=hook_env, cwd=trees[comp.name], timeout=timeout,
                            host=host)
            out.add(f"deploy {comp.name}{where}: exit {done.exit_code} in "
                    f"{done.duration_s:.1f} s\n{done.log}")
            if done.timed_out:
                message = f"timed out after {timeout:.0f} s"
            elif done.exit_code != 0:
                message = f"exit {done.exit_code}: {done.output_tail.strip()}"
            else:
                message = ""
            result.checks.append(Check("deploy", f"{comp.name}{where}", not message, message))
    return result


def execute(ctx: WorkerContext, run_id: int) -> runs.Claim:
    """Execute run ``run_id`` if it is still pending; returns how the claim went."""
    settings = ctx.settings
    lease = ctx.scheduler_policy.run_timeout + timedelta(minutes=5)
    with session_scope(ctx.session_factory) as session:
        claim = runs.claim(session, run_id, ctx.worker_id, ctx.clock, lease)
    if claim is not runs.Claim.CLAIMED:
        return claim
    with session_scope(ctx.session_factory) as session:
        plan = runs.plan(session, run_id)

    out = RunLog()
    out.add(f"run {run_id} ({plan.kind}) of candidate {plan.candidate_id} on {plan.testbed}, "
            f"worker {ctx.worker_id}")
    results: list[SuiteResult] = []
    setup_error: str | None = None
    run_dir = settings.runs_dir / f"run-{run_id}"
    try:
        shutil.rmtree(run_dir, ignore_errors=True)
        trees = {}
        for comp in plan.components:
            trees[comp.name] = checkout.checkout(settings.repos_dir, comp.name, comp.url,
                                                 comp.sha, run_dir / "src" / comp.name)
            out.add(f"checkout {comp.name} at {comp.sha[:12]}")
        spec = _spec(settings, plan.testbed, out)
        with create_testbed(spec, tag=f"r{run_id}", state_dir=run_dir / "state",
                            records_dir=settings.records_dir) as bed:
            notice = getattr(bed, "notice", None)
            if notice:
                out.add(str(notice))
            deployed = _deploy(ctx, plan, bed, trees, out)
            results.append(deployed)
            if all(c.passed for c in deployed.checks):
                for name in settings.config.suites.enabled:
                    run_suite, _ = SUITES[name]
                    suite_result = run_suite(bed, _suite_options(settings, name))
                    out.add(f"suite {name}: {len(suite_result.checks)} checks, "
                            f"{len(suite_result.measurements)} measurements"
                            + (f", infra error: {suite_result.infra_error}"
                               if suite_result.infra_error else ""))
                    if suite_result.log:
                        out.add(suite_result.log)
                    results.append(suite_result)
            else:
                out.add("deploy failed: suites skipped")
    except (InfraError, TestbedError) as exc:
        setup_error = str(exc)
        out.add(f"infra error: {exc}")
    except Exception as exc:  # a bug must still end the run with a verdict and a clean testbed
        setup_error = f"unexpected error in the runner: {exc!r}"
        out.add(traceback.format_exc())
    finally:
        shutil.rmtree(run_dir / "src", ignore_errors=True)

    with session_scope(ctx.session_factory) as session:
        judgement = runs.finish(session, run_id, results, ctx.clock,
                                settings.judgement_policy(), log=out.text(),
                                setup_error=setup_error)
        reconcile_after_commit(session, ctx.dispatcher)
    out.add(f"verdict: {judgement.verdict}")
    if judgement.verdict is not Verdict.PASSED:
        log.info("run %s: %s", run_id, "; ".join(e.message for e in judgement.excuses))
    return claim
