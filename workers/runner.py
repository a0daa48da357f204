"""Executing one run: lease a testbed, check out the combination, deploy it, run the suites, judge.

Everything here is in service of one promise: whatever happens — a hook fails, a tool is missing, a
timeout hits, the code has a bug — the run ends with a verdict and the testbed is torn down. Only
the candidate's own doing (a hook failing, a check failing, a regression) counts against it; the
rest is ``infra_error``.

The run's phases: the combination's own deployment and the suites on a fresh testbed; then, when
there is a known-good to upgrade from, the upgrade suite on a second fresh testbed (the first is
torn down before). An A/B run (``ab`` settings; ``workers/abrounds.py``) builds a twin *control*
testbed from the same spec beside the candidate's (both at once), deploys the known-good on it,
and runs the suites on both sides in interleaved rounds; the control is torn down before the
upgrade suite. The single exception to "always torn down" is an autohold
(``certifier/pipeline/autohold.py``): a failed or regressed run that a person asked to hold keeps
its last testbed (the candidate's), and the run's log says how to enter it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from certifier.db.session import session_scope
from certifier.domain.abtest import NoiseHistory, undecided_suites
from certifier.domain.judgement import RunJudgement, Verdict
from certifier.domain.results import Measurement, Side, SuiteResult
from certifier.domain.snapshots import Snapshot
from certifier.pipeline import autohold, runs
from certifier.pipeline.dispatch import reconcile_after_commit
from certifier.settings import Settings, TestbedConfig
from certifier.topology import TopologyError
from certifier.topology import load as load_topology
from certifier.tracking import events
from workers import abrounds, calibration, checkout, janitor, snapshots
from workers.context import WorkerContext
from workers.environment import Recorder
from workers.recipes import Deployable, Recipes, RunInfo
from workers.suites import SUITES, upgrade
from workers.testbed.base import InfraError, Testbed, TestbedError, TestbedSpec
from workers.testbed.factory import create_testbed
from workers.testbed.tags import control_tag, probe_tag, run_tag

log = logging.getLogger(__name__)
LOG_LIMIT = 200_000  # characters of the run log kept with the run (the tail)
LOG_FILE_LIMIT = 10_000_000  # characters of a run's log file; past them, one line says so
LOG_FILES_KEPT = 1000  # run log files in <data>/runs; older ones go as new runs start
_LOG_FILE = re.compile(r"run-(\d+)\.log")


class RunLog:
    """The run's own log: its tail is stored with the run and shown over the API, and the whole
    of it is written, as it grows, to ``path`` (``<data>/runs/run-<id>.log``).

    The worker's log gets one line per run (:func:`_finish`), not the run's own lines: those
    buried the worker's messages (25k lines after one afternoon). The file must never cost the
    run its verdict: if it cannot be written, the worker's log says so once and the run goes on.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.lines: list[str] = []
        self.path = path
        self._written = 0
        self._write("", "w")

    def add(self, text: str) -> None:
        self.lines.append(text)
        if self._written + len(text) < LOG_FILE_LIMIT:
            self._write(text + "\n", "a")
        elif self._written < LOG_FILE_LIMIT:  # once: the run's tail is still kept with the run
            self._write(f"(log file cut at {LOG_FILE_LIMIT} characters; the tail is stored "
                        "with the run)\n", "a")
            self._written = LOG_FILE_LIMIT

    def _write(self, text: str, mode: str) -> None:
        if self.path is None:
            return
        try:
            with self.path.open(mode, encoding="utf-8", errors="replace") as file:
                file.write(text)
            self._written += len(text)
        except OSError as exc:
            log.warning("cannot write the run log %s: %s", self.path, exc)
            self.path = None

    def text(self) -> str:
        return "\n".join(self.lines)


def _log_file(runs_dir: Path, run_id: int, keep: int = LOG_FILES_KEPT) -> Path | None:
    """Where run ``run_id`` writes its log, after removing all but the newest ``keep - 1``
    others (by run id); None if the folder cannot be made."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        found = sorted((int(m.group(1)), path) for path in runs_dir.glob("run-*.log")
                       if (m := _LOG_FILE.fullmatch(path.name)) and int(m.group(1)) != run_id)
        for _, path in found[:max(0, len(found) - keep + 1)]:
            path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("run %s: no log file in %s: %s", run_id, runs_dir, exc)
        return None
    return runs_dir / f"run-{run_id}.log"


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
    topology = config.topology
    if topology is None and config.topology_file is not None:
        try:  # normally read with the config file; settings built in code may still name one
            topology = load_topology(config.topology_file)
        except TopologyError as exc:
            raise TestbedError(str(exc)) from None
    return TestbedSpec(name=config.name, driver=driver,  # type: ignore[arg-type]
                       hosts=config.host_names(), subnet=config.subnet, mtu=config.mtu,
                       topology=topology, ssh=config.ssh)


def _suite_options(settings: Settings, name: str) -> object:
    """The suite's options from its config section (same field names), or its defaults."""
    _, options_cls = SUITES[name]
    section = getattr(settings.config.suites, name, None)
    if section is None:
        return options_cls()
    return options_cls(**section.model_dump())


def _checkout(settings: Settings, plans: tuple[runs.ComponentPlan, ...], dest: Path, out: RunLog,
              reuse: tuple[Deployable, ...] = (), gone: list[tuple[str, str, str]] | None = None
              ) -> tuple[Deployable, ...]:
    """Extract each component's commit under ``dest``; a tree in ``reuse`` at the same sha is
    used as it is. Each commit is pinned in the mirrors; one upstream has lost is taken from the
    known-good archive and added to ``gone`` (name, sha, why) for the database."""
    have = {(d.name, d.sha): d.checkout for d in reuse}
    found = []
    for comp in plans:
        tree = have.get((comp.name, comp.sha))
        if tree is None:
            tree, source = checkout.checkout_from(settings.repos_dir, comp.name, comp.url,
                                                  comp.sha, dest / comp.name,
                                                  settings.archive_path)
            with contextlib.suppress(InfraError):  # tracking's mirror: a bonus, not a duty
                checkout.pin(settings.tracking_dir / f"{comp.name}.git", comp.sha)
            if source.origin is checkout.Origin.ARCHIVE:
                out.add(f"checkout {comp.name} at {comp.sha[:12]} from the archive: "
                        f"{source.note}")
                if source.upstream_lacks and gone is not None:
                    gone.append((comp.name, comp.sha, source.note))
            else:
                out.add(f"checkout {comp.name} at {comp.sha[:12]}")
        found.append(Deployable(comp.name, comp.sha, tree,
                                Path(comp.recipe) if comp.recipe else None, comp.run_in))
    return tuple(found)


def _record_gone(ctx: WorkerContext, gone: list[tuple[str, str, str]], out: RunLog) -> None:
    """Mark the commits this run found gone upstream, as tracking marks force-pushed ones."""
    if not gone:
        return
    with session_scope(ctx.session_factory) as session:
        for name, sha, why in gone:
            if events.notice_gone(session, name, sha, ctx.clock, f"worker:{ctx.worker_id}",
                                  why):
                out.add(f"{name} {sha[:12]} is gone upstream: marked in the manifest")


def _build(settings: Settings, spec: TestbedSpec, run_id: int, state_dir: Path,
           out: RunLog, *, tag: str | None = None) -> Testbed:
    bed = create_testbed(spec, tag=tag or run_tag(settings, run_id), state_dir=state_dir,
                         records_dir=settings.records_dir)
    notice = getattr(bed, "notice", None)
    if notice:
        out.add(str(notice))
    return bed


def _build_twins(settings: Settings, spec: TestbedSpec, run_id: int, run_dir: Path,
                 out: RunLog) -> tuple[Testbed, Testbed]:
    """The candidate's testbed and its control twin, built at the same time (each is its own
    namespaces and record: nothing is shared). If one fails, the other is torn down."""
    wanted = ((run_tag(settings, run_id), run_dir / "state"),
              (control_tag(settings, run_id), run_dir / "control"))
    built: list[Testbed] = []
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"build-{run_id}") as pool:
        futures = [pool.submit(_build, settings, spec, run_id, state, out, tag=tag)
                   for tag, state in wanted]
        for future in futures:
            try:
                built.append(future.result())
            except Exception as exc:  # the first is raised below, after cleanup
                errors.append(exc)
    if errors:
        for bed in built:
            _teardown(bed)
        raise errors[0]
    out.add(f"A/B: candidate testbed {built[0].tag}, control testbed {built[1].tag} (the "
            "known-good)")
    return built[0], built[1]


def _deploy(recipes: Recipes, comps: tuple[Deployable, ...]) -> SuiteResult:
    """Run each component's deploy hook; a failing hook is the candidate's failure, not infra."""
    result = SuiteResult(suite="deploy")
    for comp in comps:
        for outcome in recipes.call(comp, "deploy", suite="deploy", check=comp.name):
            result.checks.extend(outcome.checks)
            if outcome.infra_error and not result.infra_error:
                result.infra_error = outcome.infra_error
    return result


def _deploy_control(recipes: Recipes, base: tuple[Deployable, ...], version: int | None) -> None:
    """Deploy the known-good on the control testbed; its failure is the testbed's problem."""
    deployed = _deploy(recipes, base)
    failed = [f"{c.name}" + (f": {c.message}" if c.message else "")
              for c in deployed.checks if not c.passed]
    if deployed.infra_error or failed:
        raise InfraError(f"the known-good (#{version}) failed to deploy on the control testbed: "
                         + "; ".join(filter(None, [deployed.infra_error, *failed])))


def _run_suite(settings: Settings, bed: Testbed, name: str, out: RunLog,
               side: Side | None = None, share: int = 1,
               recorder: Recorder | None = None) -> SuiteResult:
    """Run suite ``name`` on ``bed``; ``side`` in an A/B run (whose rounds log the summary),
    whose rounds may measure 1/``share`` of the configured time each; ``recorder`` takes the
    host's pressure over it (a control side's span is ``control.<name>``)."""
    run_suite, _ = SUITES[name]
    options = abrounds.round_options(name, _suite_options(settings, name), share)
    if recorder is None:
        result = run_suite(bed, options)
    else:
        with recorder.span(f"control.{name}" if side is Side.CONTROL else name):
            result = run_suite(bed, options)
    if side is None:
        out.add(_suite_line(name, result))
    if result.log:
        out.add(f"{side}: {result.log}" if side else result.log)
    return result


def _measure_both(settings: Settings, plan: runs.RunPlan, bed: Testbed, control: Testbed,
                  more_rounds: abrounds.MoreRounds, out: RunLog,
                  recorder: Recorder | None = None) -> tuple[list[SuiteResult], int]:
    """The suites on the candidate's testbed and on the control, in interleaved rounds."""
    sides = {Side.CANDIDATE: bed, Side.CONTROL: control}
    rounds = abrounds.rounds_for(settings.config.ab, plan.kind, more_rounds)

    def one(name: str, side: Side) -> SuiteResult:
        return _run_suite(settings, sides[side], name, out, side, rounds.share, recorder)

    measured, done = abrounds.measure(settings.config.suites.enabled, one, rounds, out.add)
    out.add(f"A/B: {done} round(s) measured")
    return measured, done


def _failed(results: list[SuiteResult]) -> bool:
    return any(r.infra_error or not all(c.passed for c in r.checks) for r in results)


def _upgrade_wanted(settings: Settings, plan: runs.RunPlan, results: list[SuiteResult],
                    out: RunLog) -> bool:
    cfg = settings.config.suites.upgrade
    if not cfg.enabled or plan.kind not in cfg.run_kinds:
        return False
    if not plan.base:
        out.add("suite upgrade: skipped: there is no known-good to upgrade from yet")
        return False
    if _failed(results):
        out.add("suite upgrade: skipped: the run has already failed")
        return False
    return True


def _upgrade_planned(settings: Settings, plan: runs.RunPlan) -> bool:
    """Will this run have an upgrade suite, if nothing fails first? (Quiet: no log lines.)"""
    cfg = settings.config.suites.upgrade
    return cfg.enabled and plan.kind in cfg.run_kinds and bool(plan.base)


def _fresh_snapshots(recipes: Recipes, comps: tuple[Deployable, ...],
                     out: RunLog) -> dict[str, Snapshot]:
    """The candidate's state as a fresh deployment has it, for the upgrade suite's diff to show
    next to the upgraded values (a reset to the new default reads as such). Informative only:
    a snapshot that fails here is noted, never held against the run."""
    taken = {}
    for comp in comps:
        if comp.hook_path("snapshot") is None:
            continue
        try:
            snap = snapshots.take(recipes, comp, "fresh", "deploy")
        except (InfraError, snapshots.SnapshotInfraError) as exc:
            out.add(f"snapshot {comp.name} of the fresh deployment not taken: {exc}")
            continue
        if snap.problem:
            out.add(f"{snap.problem} (shown with the upgrade's diff, not judged)")
        taken[comp.name] = snap
    return taken


def _upgrade(ctx: WorkerContext, plan: runs.RunPlan, bed: Testbed, comps: tuple[Deployable, ...],
             base: tuple[Deployable, ...], fresh: dict[str, Snapshot]) -> SuiteResult:
    cfg = ctx.settings.config.suites.upgrade
    assert plan.base_version is not None  # plan.base is only filled with its version
    options = upgrade.UpgradeOptions(
        run=RunInfo(plan.run_id, str(plan.kind), plan.candidate_id),
        known_good_version=plan.base_version, known_good=base, candidate=comps,
        hook_timeout=ctx.settings.config.scheduler.hook_timeout.total_seconds(),
        ping_interval=cfg.ping_interval, ping_from=cfg.ping_from, ping_to=cfg.ping_to,
        settle_s=cfg.settle_s, max_outage_s=cfg.max_outage_s, fresh=fresh)
    return upgrade.run(bed, options)


def _suite_line(name: str, result: SuiteResult) -> str:
    return (f"suite {name}: {len(result.checks)} checks, {len(result.measurements)} measurements"
            + (f", infra error: {result.infra_error}" if result.infra_error else ""))


def _enter_commands(bed: Testbed, hold_id: int) -> list[str]:
    """How a person gets into a kept testbed, and how they let it go."""
    commands = []
    hosts = {h.namespace: h for h in bed.hosts if h.namespace}
    for namespace in bed.namespaces:
        host = hosts.get(namespace)
        what = f"{host.name} {host.address}" if host else "infrastructure namespace"
        commands.append(f"ip netns exec {namespace} bash    # {what}")
    commands.append(f"cd {bed.state_dir.resolve()}    # the state folder: recipes' files, logs")
    commands.append(f"certifier hold release {hold_id}    # or DELETE /api/v1/holds/{hold_id}: "
                    "tears the testbed down")
    return commands


def _teardown(bed: Testbed | None) -> str | None:
    """Tear ``bed`` down; the error, if it would not go (the janitor retries from the record)."""
    if bed is None:
        return None
    try:
        bed.teardown()
    except (InfraError, TestbedError) as exc:
        log.exception("teardown of testbed %s (tag %s) failed", bed.name, bed.tag)
        return f"testbed teardown failed: {exc}"
    return None


def _probe(ctx: WorkerContext, plan: runs.RunPlan, recorder: Recorder, which: str,
           driver: str | None, run_dir: Path, out: RunLog) -> None:
    """The environment check's calibration probe (workers/calibration.py), if configured."""
    cfg = ctx.settings.config.environment
    if not (cfg.enabled and cfg.probe) or driver is None:
        return
    calibration.probe(recorder, which, testbed=plan.testbed, driver=driver,
                      tag=probe_tag(ctx.settings, plan.run_id),
                      state_dir=run_dir / f"probe-{which}", records_dir=ctx.settings.records_dir,
                      options=calibration.ProbeOptions(fio=cfg.probe_fio))
    out.add(calibration.describe(which, recorder.probes[which]))


def _statistics(settings: Settings, noise: NoiseHistory) -> abrounds.MoreRounds:
    """Another round, of the suites whose series the A/B statistics leave undecided (judged as
    the run will be: the same policy, the same noise history of the testbed)."""
    policy = settings.config.ab.gate_policy(settings.config.detector)

    def more(measurements: list[Measurement], rounds_done: int) -> frozenset[str]:
        return undecided_suites(measurements, policy, noise)

    return more


def execute(ctx: WorkerContext, run_id: int,
            more_rounds: abrounds.MoreRounds | None = None) -> runs.Claim:
    """Execute run ``run_id`` if it is still pending; returns how the claim went.

    ``more_rounds`` decides, in an A/B gate or bisect run, whether to measure another round
    once ``ab.min_rounds`` are done (up to ``ab.max_rounds``); by default the A/B statistics
    (``certifier/domain/abtest.py``: some series still undecided).
    """
    settings = ctx.settings
    lease = ctx.scheduler_policy.run_timeout + timedelta(minutes=5)
    with session_scope(ctx.session_factory) as session:
        claim = runs.claim(session, run_id, ctx.worker_id, ctx.clock, lease,
                           testbed=settings.worker_testbed)
    if claim is not runs.Claim.CLAIMED:
        return claim
    with session_scope(ctx.session_factory) as session:
        plan = runs.plan(session, run_id)
        if more_rounds is None:
            more_rounds = _statistics(settings, runs.noise_history(
                session, plan.testbed, exclude=run_id, candidate=plan.candidate_id))

    out = RunLog(_log_file(settings.runs_dir, run_id))
    out.add(f"run {run_id} ({plan.kind}) of candidate {plan.candidate_id} on {plan.testbed}, "
            f"worker {ctx.worker_id}")
    results: list[SuiteResult] = []
    setup_error: str | None = None
    run_dir = settings.runs_dir / f"run-{run_id}"
    bed: Testbed | None = None
    control: Testbed | None = None  # an A/B run's twin, with the known-good deployed
    rounds = 0
    info = RunInfo(run_id, str(plan.kind), plan.candidate_id)
    gone: list[tuple[str, str, str]] = []  # commits upstream has lost, found by the checkout
    timeout = settings.config.scheduler.hook_timeout.total_seconds()
    recorder = Recorder()  # the environment check: host pressure per suite, probes
    driver: str | None = None
    try:
        reaped = janitor.clear_testbed(ctx, plan.testbed, run_id)  # a dead earlier run's leftovers
        if reaped:
            out.add(f"janitor: removed what earlier runs left on {plan.testbed}: "
                    + ", ".join(reaped))
        shutil.rmtree(run_dir, ignore_errors=True)
        comps = _checkout(settings, plan.components, run_dir / "src", out, gone=gone)
        spec = _spec(settings, plan.testbed, out)
        driver = spec.driver
        _probe(ctx, plan, recorder, "start", driver, run_dir, out)
        single = abrounds.single_sided_because(settings.config.ab, plan.kind, bool(plan.base),
                                               spec)
        base: tuple[Deployable, ...] = ()
        if single is None:
            base = _checkout(settings, plan.base, run_dir / "src-known-good", out, reuse=comps,
                             gone=gone)
            bed, control = _build_twins(settings, spec, run_id, run_dir, out)
        else:
            out.add(f"A/B: single-sided: {single}")
            bed = _build(settings, spec, run_id, run_dir / "state", out)
        recipes = Recipes(bed, info, timeout, out.add)
        deployed = _deploy(recipes, comps)
        results.append(deployed)
        fresh: dict[str, Snapshot] = {}
        if _failed([deployed]):
            out.add("deploy failed: suites skipped")
        else:
            if _upgrade_planned(settings, plan):
                fresh = _fresh_snapshots(recipes, comps, out)
            if control is not None:
                _deploy_control(Recipes(control, info, timeout, lambda t: out.add(f"control: {t}")),
                                base, plan.base_version)
                measured, rounds = _measure_both(settings, plan, bed, control, more_rounds, out,
                                                 recorder)
                results.extend(measured)
            else:
                results.extend(_run_suite(settings, bed, name, out, recorder=recorder)
                               for name in settings.config.suites.enabled)
            error = _teardown(control)
            control = None
            if error:
                raise InfraError(error)
            if _upgrade_wanted(settings, plan, results, out):
                base = base or _checkout(settings, plan.base, run_dir / "src-known-good", out,
                                         reuse=comps, gone=gone)
                error = _teardown(bed)  # one testbed per run at a time
                bed = None
                if error:
                    raise InfraError(error)
                bed = _build(settings, spec, run_id, run_dir / "upgrade", out)
                out.add(f"suite upgrade: known-good #{plan.base_version} deployed, then "
                        "upgraded in place to this candidate")
                with recorder.span("upgrade"):
                    upgraded = _upgrade(ctx, plan, bed, comps, base, fresh)
                out.add(_suite_line("upgrade", upgraded))
                if upgraded.log:
                    out.add(upgraded.log)
                results.append(upgraded)
    except (InfraError, TestbedError) as exc:
        setup_error = str(exc)
        out.add(f"infra error: {exc}")
    except Exception as exc:  # a bug must still end the run with a verdict and a clean testbed
        setup_error = f"unexpected error in the runner: {exc!r}"
        out.add(traceback.format_exc())
    except BaseException:  # the worker is shutting down: leave nothing behind, then go
        _teardown(control)
        _teardown(bed)
        log.warning("run %s (%s) stopped by the worker's shutdown; log: %s", run_id, plan.kind,
                    out.path or "not written")
        raise

    _teardown(control)  # left only by an error; the janitor retries one that will not go
    _probe(ctx, plan, recorder, "end", driver, run_dir, out)
    try:
        _record_gone(ctx, gone, out)
    except Exception:  # a note for the manifest must never cost the run its verdict
        log.exception("run %s: cannot mark commits gone upstream", run_id)
    kept = _finish(ctx, plan, results, setup_error, bed, out, rounds, recorder.summary())
    if not kept:
        shutil.rmtree(run_dir / "src", ignore_errors=True)
        shutil.rmtree(run_dir / "src-known-good", ignore_errors=True)
    return claim


def _finish(ctx: WorkerContext, plan: runs.RunPlan, results: list[SuiteResult],
            setup_error: str | None, bed: Testbed | None, out: RunLog, rounds: int,
            environment: dict[str, object] | None = None) -> bool:
    """Judge and record the run; tear its testbed down unless a hold keeps it. True if kept."""
    settings, run_id = ctx.settings, plan.run_id
    policy = settings.judgement_policy()
    hold_id: int | None = None
    judged: RunJudgement | None = None  # judged once: runs.finish records this one
    if bed is not None and setup_error is None:
        with session_scope(ctx.session_factory) as session:
            judged = runs.judge(session, run_id, results, policy)
            hold_id = autohold.matching(session, run_id, judged.verdict)
    if hold_id is None:
        teardown_error = _teardown(bed)
        if teardown_error and setup_error is None:
            setup_error = teardown_error
            out.add(f"infra error: {teardown_error}")
    kept = None
    with session_scope(ctx.session_factory) as session:
        judgement = runs.finish(session, run_id, results, ctx.clock, policy,
                                log=out.text()[-LOG_LIMIT:], setup_error=setup_error,
                                rounds=rounds, environment=environment,
                                environment_policy=settings.config.environment.policy(),
                                judged=judged)
        if bed is not None and hold_id is not None and judgement.verdict in autohold.HELD_VERDICTS:
            kept = autohold.catch(session, hold_id, run_id, ctx.clock, testbed=plan.testbed,
                                  tag=bed.tag, worker=ctx.worker_id,
                                  commands=_enter_commands(bed, hold_id))
            if kept is not None:
                note = (f"testbed {bed.name} (tag {bed.tag}) kept by hold {hold_id} until "
                        f"{kept.expires_at:%Y-%m-%d %H:%M:%S} UTC; enter it with:\n"
                        + "\n".join(f"  {c}" for c in kept.commands))
                out.add(note)
                run = runs.get_run(session, run_id)
                run.log = out.text()[-LOG_LIMIT:]
        reconcile_after_commit(session, ctx.dispatcher)
    if hold_id is not None and kept is None:
        _teardown(bed)  # the hold went away meanwhile, or the run did not fail after all
    elif kept is not None and bed is not None:
        janitor.keep(settings.records_dir, bed.tag, timedelta(seconds=kept.duration_s))
    out.add(f"verdict: {judgement.verdict}")
    why = ("" if judgement.verdict is Verdict.PASSED else  # one line: each excuse's first
           " (" + "; ".join(e.message.partition("\n")[0] for e in judgement.excuses)[:500] + ")")
    log.info("run %s (%s) of candidate %s on %s: %s%s; log: %s", run_id, plan.kind,
             plan.candidate_id, plan.testbed, judgement.verdict, why, out.path or "not written")
    return kept is not None
