"""The upgrade-preservation suite: does an in-place upgrade to the candidate keep what was running?

As OpenStack Grenade and tripleo-upgrade do it, on a fresh testbed: deploy the known-good the
candidate was formed on, let every recipe create its resources (``resources create``: a running
workload, its data, its configuration), then upgrade each component in place to the candidate's
commit (``upgrade``, or ``deploy`` again where a recipe has no ``upgrade``) while a background
``ping -D -O`` crosses the data plane, and finally ask every recipe whether its resources survived
(``resources verify``) and clean them up (``resources destroy``).

Around the upgrade, each component's state is snapshot (its recipe's ``snapshot`` hook, else
its configuration-like files: :mod:`workers.snapshots`) and diffed: a value the upgrade changed
that the candidate's upgrade notes do not declare fails, so a silent reset of an operator's
setting is caught even by a ``verify`` that only checks the data.

What counts against whom: the known-good's own deploy and ``resources create`` failing say nothing
about the candidate (it has not been touched yet), so they are infra errors; a failing
``upgrade``, ``verify`` or ``destroy`` is the candidate's doing and becomes a failed check, one
per resource a recipe reports (``ok NAME`` / ``not ok NAME`` lines, see ``docs/recipes.md``).

Measurements: ``outage_s`` (the longest time between two answered pings with losses between
them, from ``ping -D`` timestamps, less one interval),
``lost_packets`` and ``duration_s`` (all upgrade hooks, wall time). The ping is read line by line,
so its numbers survive even if it has to be killed instead of interrupted.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from certifier.domain.results import Better, Check, Measurement, SuiteResult
from certifier.domain.snapshots import Snapshot, StateDiff, compare, new_notes
from workers import snapshots
from workers.recipes import Deployable, Outcome, Recipes, RunInfo
from workers.suites.ping import last_stamp, longest_outage_s, loss_runs, reply_stamps
from workers.testbed.base import Host, InfraError, Testbed

SUITE = "upgrade"
STOP_TIMEOUT_S = 3.0

_REPLY = re.compile(r"icmp_seq=(\d+) ttl=\d+ time=")
_NO_ANSWER = re.compile(r"no answer yet for icmp_seq=(\d+)")
_TRANSMITTED = re.compile(r"(\d+) packets transmitted")


@dataclass(frozen=True, slots=True)
class UpgradeOptions:
    """What to upgrade from and to; built by the runner from the run's plan."""

    run: RunInfo
    known_good_version: int
    known_good: tuple[Deployable, ...]
    candidate: tuple[Deployable, ...]
    hook_timeout: float = 600.0
    ping_interval: float = 0.05
    ping_from: str | None = None
    ping_to: str | None = None
    settle_s: float = 0.5
    max_outage_s: float | None = None
    first_reply_timeout_s: float = 5.0
    fresh: dict[str, Snapshot] = field(default_factory=dict)  # from the run's own deployment


@dataclass(frozen=True, slots=True)
class PingTrace:
    """Per-packet outcome of a background ping, as read from ``ping -D -O -n`` output."""

    transmitted: int
    answered: frozenset[int] = field(default_factory=frozenset)
    stamps: dict[int, float] = field(default_factory=dict)  # seq -> when its reply came (-D)
    last_stamp: float | None = None

    @property
    def lost(self) -> list[int]:
        # The last packet may still have been in flight when ping was stopped: not a loss.
        return [s for s in range(1, self.transmitted) if s not in self.answered]

    def longest_loss_run(self) -> int:
        return max((last - first + 1 for first, last in loss_runs(self.lost)), default=0)

    def outage_s(self, interval: float) -> float:
        """The longest time without an answer, from the replies' timestamps."""
        return longest_outage_s(self.lost, interval, self.stamps, self.last_stamp)

    def answered_after(self, seq: int) -> bool:
        return any(s > seq for s in self.answered)


def parse_trace(text: str) -> PingTrace:
    """Read ping's per-packet lines; the summary line, when ping printed one, gives the count."""
    answered = frozenset(int(m.group(1)) for m in _REPLY.finditer(text))
    seen = [*answered, *(int(m.group(1)) for m in _NO_ANSWER.finditer(text))]
    summary = _TRANSMITTED.search(text)
    transmitted = int(summary.group(1)) if summary else max(seen, default=0)
    return PingTrace(transmitted=transmitted, answered=answered, stamps=reply_stamps(text),
                     last_stamp=last_stamp(text))


class BackgroundPing:
    """``ping -D -O`` from one host to another for as long as the upgrade takes."""

    def __init__(self, testbed: Testbed, src: Host, dst: Host, interval: float,
                 log_path: Path) -> None:
        self.testbed = testbed
        self.src = src
        self.dst = dst
        self.interval = interval
        self.log_path = log_path
        self.argv = ["ping", "-D", "-O", "-n", "-i", f"{interval:g}", dst.address]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.unlink(missing_ok=True)
        self.proc = self.testbed.spawn(self.argv, host=self.src.name, log_path=self.log_path)

    def trace(self) -> PingTrace:
        try:
            return parse_trace(self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return PingTrace(0)

    def wait_for_reply(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.trace().answered:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return False
            time.sleep(self.interval)
        return False

    def stop(self) -> PingTrace:
        """Interrupt ping (it prints its summary), or kill it if it does not stop in time."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.testbed.stop(proc)
        self.proc = None
        return self.trace()


def _ping_pair(testbed: Testbed, options: UpgradeOptions) -> tuple[Host, Host] | None:
    hosts = testbed.hosts
    if options.ping_from or options.ping_to:
        src = testbed.host(options.ping_from or hosts[0].name)
        dst = testbed.host(options.ping_to or next(h.name for h in hosts if h.name != src.name))
        return src, dst
    return (hosts[0], hosts[1]) if len(hosts) >= 2 else None


def _first_problem(outcomes: list[Outcome]) -> str | None:
    for outcome in outcomes:
        if outcome.infra_error:
            return outcome.infra_error
        failed = next((c for c in outcome.checks if not c.passed), None)
        if failed is not None:
            return f"{failed.name}: {failed.message}"
    return None


class _InfraStop(Exception):
    """Ends the suite early with an infra error (the known-good side failed)."""


def run(testbed: Testbed, options: UpgradeOptions) -> SuiteResult:
    """Deploy the known-good, create resources, upgrade under ping, verify; never raises."""
    result = SuiteResult(suite=SUITE)
    logs: list[str] = []
    version = options.known_good_version
    recipes = Recipes(testbed, options.run, options.hook_timeout, logs.append,
                      extra_env={"CERTIFIER_KNOWN_GOOD_VERSION": str(version)})
    pinger: BackgroundPing | None = None
    try:
        # 1-2. The known-good, as it was certified, with its workloads.
        for comp in options.known_good:
            problem = _first_problem(recipes.call(comp, "deploy", suite=SUITE,
                                                  check=f"deploy {comp.name}"))
            if problem:
                raise _InfraStop(f"known-good #{version} did not deploy ({problem}); the "
                                 "upgrade cannot be tested on this testbed")
        for comp in options.known_good:
            problem = _first_problem(recipes.call(comp, "resources", action="create",
                                                  suite=SUITE, check=f"create {comp.name}"))
            if problem:
                raise _InfraStop(f"resources create on known-good #{version} failed "
                                 f"({problem})")
        before_state = _snapshot_known_good(recipes, options)
        # 3. The data plane, watched for the whole upgrade.
        pair = _ping_pair(testbed, options)
        if pair is None:
            logs.append("one host only: no data-plane ping during the upgrade")
        else:
            pinger = BackgroundPing(testbed, *pair, options.ping_interval,
                                    testbed.state_dir / SUITE / "ping.log")
            pinger.start()
            if not pinger.wait_for_reply(options.first_reply_timeout_s):
                raise _InfraStop(f"the data plane of known-good #{version} does not answer: "
                                 f"{pair[0].name} cannot ping {pair[1].name} "
                                 f"({pair[1].address}) before the upgrade")
            time.sleep(options.settle_s)
        # 4. The upgrade, in place, component by component.
        started = time.monotonic()
        before = {c.name: c for c in options.known_good}
        for comp in options.candidate:
            previous = before.get(comp.name)
            if previous is None:
                outcomes = recipes.call(comp, "deploy", suite=SUITE,
                                        check=f"deploy {comp.name} (new)")
            else:
                fallback = None if comp.hook_path("upgrade") else comp.hook_path("deploy")
                outcomes = recipes.call(comp, "upgrade", suite=SUITE,
                                        check=f"upgrade {comp.name}", previous=previous,
                                        executable=fallback)
            _collect(result, outcomes)
        duration = time.monotonic() - started
        result.measurements.append(Measurement(SUITE, "duration_s", duration, "s", Better.LOWER))
        if pinger is not None:
            upgraded_at = pinger.trace().transmitted
            time.sleep(options.settle_s)
            logs.append(_measure_ping(result, pinger, pinger.stop(), upgraded_at, options))
            pinger = None
        # 5. Did everything survive? The state as Certifier sees it, then the recipes' verify;
        # then clean up, through the candidate's code.
        after = {c.name: c for c in options.candidate}
        _diff_state(result, recipes, options, before_state, after)
        for name, previous in before.items():
            comp = after.get(name, previous)
            _collect(result, recipes.call(comp, "resources", action="verify", suite=SUITE,
                                          check=f"verify {name}"))
        for name, previous in before.items():
            comp = after.get(name, previous)
            _collect(result, recipes.call(comp, "resources", action="destroy", suite=SUITE,
                                          check=f"destroy {name}"))
    except _InfraStop as exc:
        result.infra_error = str(exc)
    except (InfraError, snapshots.SnapshotInfraError) as exc:
        result.infra_error = str(exc)
    finally:
        if pinger is not None:
            pinger.stop()
    result.log = "\n".join(logs)
    return result


def _collect(result: SuiteResult, outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        result.checks.extend(outcome.checks)
        if outcome.infra_error and not result.infra_error:
            result.infra_error = outcome.infra_error


def _measure_ping(result: SuiteResult, pinger: BackgroundPing, trace: PingTrace,
                  upgraded_at: int, options: UpgradeOptions) -> str:
    """Outage and loss measurements (and checks); returns a line for the log."""
    labels = {"src": pinger.src.name, "dst": pinger.dst.name}
    outage = trace.outage_s(options.ping_interval)
    lost = len(trace.lost)
    result.measurements += [
        Measurement(SUITE, "outage_s", outage, "s", Better.LOWER, dict(labels)),
        Measurement(SUITE, "lost_packets", float(lost), "count", Better.LOWER, dict(labels)),
    ]
    where = f"{pinger.src.name}->{pinger.dst.name}"
    after = trace.transmitted - upgraded_at
    if after >= 2 and not trace.answered_after(upgraded_at):
        result.checks.append(Check(
            SUITE, f"data plane {where}", False,
            f"{pinger.src.name} cannot reach {pinger.dst.name} ({pinger.dst.address}) after the "
            f"upgrade: no reply to the last {after} pings"))
    if options.max_outage_s is not None:
        result.checks.append(Check(
            SUITE, f"outage {where}", outage <= options.max_outage_s,
            f"longest outage {outage:.2f} s ({lost} pings lost) during the upgrade; "
            f"limit {options.max_outage_s:g} s"))
    return (f"ping {where} every {options.ping_interval:g} s during the upgrade: "
            f"{trace.transmitted} sent, {lost} lost, longest outage {outage:.2f} s")


def _snapshot_known_good(recipes: Recipes, options: UpgradeOptions) -> dict[str, Snapshot]:
    """Every known-good component's state before the upgrade. A snapshot hook that fails here
    says nothing about the candidate (not touched yet): like ``resources create``, an infra
    error — the operator's recipe needs a look."""
    taken = {}
    for comp in options.known_good:
        snap = snapshots.take(recipes, comp, "before", SUITE)
        if snap.problem is not None and snap.source == "hook":
            raise _InfraStop(f"{snap.problem} (on known-good #{options.known_good_version})")
        taken[comp.name] = snap
    return taken


def _diff_state(result: SuiteResult, recipes: Recipes, options: UpgradeOptions,
                before: dict[str, Snapshot], after: dict[str, Deployable]) -> None:
    """Snapshot each component again and judge the diff against the candidate's upgrade notes
    (only the notes the candidate brings: see :func:`new_notes`)."""
    old = {c.name: c for c in options.known_good}
    for name, snap in before.items():
        comp = after.get(name, old[name])
        now = snapshots.take(recipes, comp, "after", SUITE)
        mine, problem = snapshots.notes(comp.checkout)
        theirs, _ = snapshots.notes(old[name].checkout)
        diff = compare(name, snap, now, options.fresh.get(name), new_notes(mine, theirs),
                       problem)
        if diff.source == "none" and not diff.problems:
            continue
        if diff.source == "files" and not (diff.files or diff.unchanged or diff.problems):
            continue  # nothing that looks like configuration: nothing to show
        result.state_diffs.append(diff)
        result.checks.extend(diff.checks(SUITE))
        recipes.log(_describe(diff))


def _describe(diff: StateDiff) -> str:
    """The diff in the run log, as the dashboard shows it."""
    head = f"state of {diff.component} across the upgrade ({diff.source})"
    lines = [f"{head}: {diff.unchanged} unchanged"
             + (f", {len(diff.changes) + len(diff.files)} changed" if diff.changes
                or diff.files else "")]
    for change in diff.changes:
        lines.append(f"  {change.describe(diff.component)}"
                     + (f" (fresh deployment: {change.fresh})" if change.fresh is not None
                        else "")
                     + (f" — upgrade note: {change.note}" if change.note else ""))
    for item in diff.files:
        lines.append(f"  {item.path}: {item.kind}"
                     + "".join(f"\n    {line}" for line in item.diff))
    lines += [f"  note: {p}" for p in diff.problems]
    return "\n".join(lines)
