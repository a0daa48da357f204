"""Noise harness on real runs (issue 12): does the pipeline tell a harmless commit from a real
breakage while the host is busy?

A world of its own (not the demo's, built from the demo world's helpers): three hosts on a netns
testbed and six components with real recipes — ``netpolicy`` (tc rate), ``routing`` (static
routes), ``storage`` (the data volume's cache mode), ``api`` (kvd, with upgrade and resources),
``mtu`` (interface MTUs) and ``firewall`` (an nftables rule that drops a share of the packets
arriving at one host). Upstream repositories live in a temp folder; the config keeps the README's
default thresholds, detector and culprit finding, with short suites.

The pipeline is driven in-process, as ``tests/pipeline`` and ``tests/recipes`` do: the real
scheduler and ``workers.runner.execute`` on a real SQLite database and real namespaces, with an
injected clock that is the wall clock plus a skip. Runs take their real time; waiting for the
next soak run or an infra retry costs nothing (the clock is moved on).

For each load level (``stress-ng --cpu N --hdd N`` in a temp folder, N = 0, 1, 2, started
before the level and killed after it, also on Ctrl-C or an error): harmless candidates (a README
line in a random component) one after another, each driven until promoted, rejected or waiting;
then one real breakage after another (6 % tc rate cut, 2 % packet drop, MTU mismatch,
unreachable route, write-through cache, an upgrade that loses data), each expected to end rejected
with a fitting excuse — or to wait, saying why, where the environment check finds the testbed too
busy. A breakage that is promoted is a silent pass: a failure of the pipeline. A breakage the
pipeline did not blame is followed by a commit that puts its component's known-good contents
back, so no candidate carries two of them; when the harness moves on from a candidate that
waits, it does what an operator would: cancels it, and stops a culprit search that waits for a
calm testbed (``actions.stop_culprit_finding``), so the train moves on. A candidate formation
makes of other commits meanwhile (an isolation after a search that could not finish) is
cancelled: each pushed commit is judged in a candidate of its own.

Besides the verdicts it counts, per level, the harmless candidates whose soak was extended, in
which a soak run found a series leaning worse, and that were held for a person.

Prints a table per level and writes a JSON file. ``--quick``: a few candidates per level. The
full size takes hours: ``--append`` pools a run's figures with those already in ``--json`` (only
figures of the same code — ``certifier/`` but its web pages, ``workers/``, this file — and the
same soak pool), and ``--minutes-per-level`` bounds a run, so the full size may be reached over
several runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import importlib.metadata
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select
from sqlalchemy.orm import Session

from certifier.db import migrate, models
from certifier.db.session import session_scope
from certifier.demo import world as demo_world
from certifier.demo.scenario import _candidate_with
from certifier.domain.judgement import Excuse
from certifier.domain.lifecycle import CandidateState
from certifier.pipeline import actions, bisection, components, runs, scheduler
from certifier.pipeline.dispatch import RecordingDispatcher
from certifier.settings import Settings, load_settings
from workers import runner
from workers.context import WorkerContext

GOOD_RATE = demo_world.GOOD_RATE_MBIT
CUT_RATE = round(GOOD_RATE * 0.94)  # a 6 % rate cut

MTU_DEPLOY = """#!/bin/sh
# Set the interface MTU that mtu.conf gives a host ("<host> <mtu>"); hosts not listed keep the
# testbed's. `ip link set` is idempotent, so this is the upgrade too.
set -eu
[ "$CERTIFIER_TESTBED_DRIVER" = netns ] || { echo "no namespaces: MTU not set"; exit 0; }
conf="$CERTIFIER_CHECKOUT/mtu.conf"
grep -v '^[[:space:]]*\\(#\\|$\\)' "$conf" | while read -r host mtu rest; do
    key=CERTIFIER_HOST_$(echo "$host" | tr a-z A-Z)
    ns=$(printenv "${key}_NS") || { echo "mtu.conf: no host $host on this testbed" >&2; exit 1; }
    iface=$(printenv "${key}_IFACE")
    ip -n "$ns" link set dev "$iface" mtu "$mtu"
    echo "$host: $iface mtu $mtu"
done
"""

FIREWALL_DEPLOY = """#!/bin/sh
# Load firewall.conf's input policy into each listed host's namespace with nftables: lines
# "<host> drop_pct <n>" drop n % of the packets arriving at that host (numgen random), as a
# misconfigured rate limiter or a lossy NIC would.
set -eu
conf="$CERTIFIER_CHECKOUT/firewall.conf"
if [ "$CERTIFIER_TESTBED_DRIVER" != netns ]; then
    echo "driver $CERTIFIER_TESTBED_DRIVER: no namespaces, firewall not loaded"; exit 0
fi
grep -v '^[[:space:]]*\\(#\\|$\\)' "$conf" | while read -r host what pct rest; do
    [ "$what" = drop_pct ] || { echo "firewall.conf: unknown setting $what" >&2; exit 1; }
    ns=$(printenv "CERTIFIER_HOST_$(echo "$host" | tr a-z A-Z)_NS") \\
        || { echo "firewall.conf: no host $host on this testbed" >&2; exit 1; }
    ip netns exec "$ns" nft add table inet cf_firewall
    ip netns exec "$ns" nft flush table inet cf_firewall
    ip netns exec "$ns" nft add chain inet cf_firewall input \\
        '{ type filter hook input priority 0; policy accept; }'
    if [ "$pct" -gt 0 ]; then
        ip netns exec "$ns" nft add rule inet cf_firewall input numgen random mod 100 \\
            '<' "$pct" drop
    fi
    echo "$host: dropping $pct % of incoming packets"
done
"""

MTU_GOOD = "# host  mtu (hosts not listed keep the testbed's MTU)\nh1 1500\n"
MTU_BAD = MTU_GOOD + "h3 1400\n"
FIREWALL_GOOD = "# host  setting  value\nh2 drop_pct 0\n"
FIREWALL_BAD = "# host  setting  value\nh2 drop_pct 2\n"

INITIAL: dict[str, tuple[dict[str, str], str]] = {
    **demo_world.INITIAL,
    "mtu": ({"mtu.conf": MTU_GOOD}, "Initial MTU settings"),
    "firewall": ({"firewall.conf": FIREWALL_GOOD}, "Initial firewall policy"),
}
RECIPES: dict[str, dict[str, str]] = {
    **demo_world.RECIPES, "mtu": {"deploy": MTU_DEPLOY}, "firewall": {"deploy": FIREWALL_DEPLOY},
}
GOOD_FILES: dict[str, dict[str, str]] = {
    name: {f: text for f, text in files.items() if not f.startswith(".")}
    for name, (files, _) in INITIAL.items()
}


@dataclass(frozen=True)
class Breakage:
    name: str
    push: demo_world.Push  # expect: any of these words in the excuses is a fitting one
    functional: bool


BREAKAGES: tuple[Breakage, ...] = (
    Breakage("tc rate cut 6 %", demo_world.Push(
        "netpolicy", {"netpolicy.conf": f"egress_rate_mbit = {CUT_RATE}\n"},
        "Trim the egress rate by 6 %", ("bandwidth",)), functional=False),
    Breakage("packet drop 2 %", demo_world.Push(
        "firewall", {"firewall.conf": FIREWALL_BAD}, "Rate-limit incoming traffic on h2",
        ("loss", "retransmit", "bandwidth", "ping")), functional=False),
    Breakage("MTU mismatch", demo_world.Push(
        "mtu", {"mtu.conf": MTU_BAD}, "Lower h3's MTU for the VPN uplink", ("mtu", "MTU")),
        functional=True),
    Breakage("unreachable route", demo_world.Push(
        "routing", {"routes.conf": demo_world.ROUTES_CUT},
        "Send traffic for the retired storage host nowhere", ("cannot reach", "unreachable")),
        functional=True),
    Breakage("write-through cache", demo_world.Push(
        "storage", {"storage.conf": "backend = file\ncache = writethrough\n"},
        "Default to write-through caching for durability", ("storage",)), functional=False),
    Breakage("upgrade loses data", demo_world.Push(
        "api", {"migrate.py": demo_world.MIGRATE_DROPS_STATE},
        "Prepare the data folder for the v2 layout", ("data",)), functional=True),
)
FUNCTIONAL = tuple(b.name for b in BREAKAGES if b.functional)

SUITES = (
    # Short suites (seconds per run): UDP stays on (its loss is what issue 12 saw as noise).
    "suites:\n  ping: {count: 20, interval: 0.02}\n"
    "  bandwidth: {duration_s: 1, reverse: false, parallel_streams: 0, udp_rate_mbit: 100}\n"
    "  storage: {size: 16M, runtime_s: 1, jobs: [rand_write, seq_write], iodepth: 1}\n"
    "  upgrade: {ping_interval: 0.02, settle_s: 0.3, run_kinds: [gate]}\n"
)


def build_world(root: Path, subnet: str, soak_runs: int, interval_s: int,
                max_extra_runs: int | None = None) -> Path:
    """Upstream repositories, recipes and the config file (README defaults but the soak's
    length, its extension when given, and the suites' sizes); the config's path. A soak
    shorter than the default 4 passing runs asks for all of its runs."""
    repos = demo_world.upstreams(root, INITIAL, RECIPES)
    config = root / "certifier.yaml"
    config.write_text(
        "# The noise harness's world (benchmarks/noise_harness.py); thresholds, detector and\n"
        "# culprit finding as the README's defaults.\n"
        f"components:\n{demo_world.components_yaml(repos)}"
        "testbeds:\n"
        "  - name: noise\n    driver: netns\n    role: gate\n    hosts: [h1, h2, h3]\n"
        f"    subnet: {subnet}\n"
        f"soak:\n  duration: {soak_runs * interval_s}s\n  interval: {interval_s}s\n"
        f"  min_runs: {min(4, soak_runs)}\n"
        + (f"  max_extra_runs: {max_extra_runs}\n" if max_extra_runs is not None else "") +
        f"{SUITES}"
        "sources:\n  local_paths: [upstream]\n"  # the upstreams are folders in the temp dir
        "scheduler:\n  run_timeout: 5m\n  hook_timeout: 60s\n")
    return config


class SkipClock:
    """The wall clock plus a skip: runs take their real time, waits between them none."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def skip(self, delta: timedelta) -> None:
        self.offset += delta


def _die_with_parent() -> None:
    """In the load generator's child: SIGTERM when this process dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def load(level: int, scratch: Path, budget_s: float) -> Iterator[str]:
    """``stress-ng --cpu N --hdd N`` for the block (nothing at 0); killed on the way out (an
    error, Ctrl-C, SIGTERM), told to stop should this process die without a chance to, and
    bounded by its own ``--timeout`` besides."""
    if level == 0:
        yield "none"
        return
    argv = ["stress-ng", "--cpu", str(level), "--hdd", str(level), "--hdd-bytes", "128M",
            "--temp-path", str(scratch), "--timeout", f"{int(budget_s)}s", "--quiet"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent)
    try:
        time.sleep(1.0)
        yield " ".join(argv[:5])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class Outcome:
    """How one candidate ended; ``end``: promoted, rejected, waiting, not formed, stuck."""

    kind: str  # harmless, breakage, fix, initial
    name: str
    component: str
    sha: str
    candidate: int | None = None
    end: str = ""
    excuses: list[str] = field(default_factory=list)
    culprit: str | None = None  # the sha culprit finding named, if any
    gate_runs: int = 0
    soak_runs: int = 0
    runs_total: int = 0
    gate_wall_s: float | None = None  # its candidate formed to the gate's decision, real s
    gate_run_s: list[float] = field(default_factory=list)  # each gate-kind run, real seconds
    fitting: bool | None = None  # breakages: the excuse names what broke
    waited_for: str | None = None  # end "waiting": "a person" or "a calm testbed"
    soak_extended: bool = False  # the soak ran past its plan: some series was undecided
    leaned: bool = False  # a soak run found a series leaning worse, undecided
    others_cancelled: int = 0  # candidates of other commits (isolations) cancelled on the way
    changed: list[str] = field(default_factory=list)  # the candidate's changed components


HELD = frozenset({"infra_error", "awaiting_decision", "awaiting_waiver"})
"""Excuse kinds of a candidate that waits for a person (retries used up, a series that leans
worse undecided, a flaky check): the harness moves on, counting it as waiting."""
BUSY_PATIENCE = 4
"""Runs in a row the environment check may find the testbed too busy before the harness moves
on, counting the candidate as waiting: the pipeline itself retries a busy testbed for as long as
it stays busy, never holding it against the candidate."""


def _held(excuses: Sequence[Excuse], busy_patience: int = BUSY_PATIENCE) -> bool:
    """Whether a candidate's excuses say it waits for a person, or for a testbed that stayed too
    busy for ``busy_patience`` runs."""
    for e in excuses:
        if e.kind in HELD:
            return True
        runs = e.data.get("runs")
        if e.kind == "infra_retry" and e.data.get("busy") \
                and isinstance(runs, list) and len(runs) >= busy_patience:
            return True
    return _finding_waits(excuses, busy_patience)


def _finding_waits(excuses: Sequence[Excuse], busy_patience: int = BUSY_PATIENCE) -> bool:
    """Whether culprit finding waits for a testbed that stayed too busy for ``busy_patience``
    runs (it waits as long as that lasts; the harness moves on)."""
    return any(e.kind == "bisection" and int(e.data.get("busy_runs") or 0) >= busy_patience
               for e in excuses)


def _waits_for(excuses: Sequence[Excuse]) -> str:
    """Whom a candidate the harness counts as waiting waits for."""
    return "a person" if any(e.kind in HELD for e in excuses) else "a calm testbed"


def _leaned(runs_of: Sequence[models.Run]) -> bool:
    """Whether a soak run found a series leaning worse that it could not decide yet (what
    extends a soak to its bound and then holds the candidate for a person)."""
    return any(e.kind == "undecidable" and e.data.get("leans_worse")
               for r in runs_of if r.kind == "soak" for e in r.excuses)


class Driver:
    """The pipeline in this process: reconcile, execute pending runs, skip idle time."""

    def __init__(self, settings: Settings, idle_step: timedelta,
                 busy_patience: int = BUSY_PATIENCE) -> None:
        self.busy_patience = busy_patience
        self.clock = SkipClock()
        self.ctx = WorkerContext(settings, clock=self.clock, dispatcher=RecordingDispatcher())
        self.idle_step = idle_step
        self.run_seconds: dict[int, float] = {}
        self.run_kinds: dict[int, str] = {}

    def report(self, component: str, sha: str, title: str) -> None:
        with session_scope(self.ctx.session_factory) as session:
            components.report_commit(session, component, sha, self.clock, title=title,
                                     author="Noise Harness", seen_via="api")

    def step(self, watch: Callable[[], None] = lambda: None) -> None:
        """One reconcile pass and every run it left pending; the clock moves on if none.

        ``watch`` is called after the reconcile (which may form a candidate) and after each
        run (whose end may decide a gate), so a caller sees each change when it happens, not
        after the rest of the step's runs."""
        with session_scope(self.ctx.session_factory) as session:
            scheduler.reconcile(session, self.clock, self.ctx.scheduler_policy,
                                self.ctx.dispatcher)
            pending = list(session.scalars(select(models.Run.id).where(
                models.Run.state == runs.RunState.PENDING).order_by(models.Run.id)))
        watch()
        if not pending:
            self.clock.skip(self.idle_step)
        for run_id in pending:
            start = time.monotonic()
            runner.execute(self.ctx, run_id)
            self.run_seconds[run_id] = time.monotonic() - start
            with session_scope(self.ctx.session_factory) as session:
                self.run_kinds[run_id] = runs.get_run(session, run_id).kind
            watch()

    def single_sided_runs(self) -> list[float]:
        """Wall times of the one-sided runs (the known-good's baseline runs: the same suites
        without a control side), real seconds."""
        return [round(t, 2) for i, t in self.run_seconds.items()
                if self.run_kinds.get(i) == "baseline"]

    def single_sided_s(self) -> float | None:
        """Median wall time of a one-sided run — what a single-run gate costs; None if there
        were none."""
        times = self.single_sided_runs()
        return statistics.median(times) if times else None

    def _cancel_open(self, session: Session, reason: str) -> int:
        """Cancel the open candidates; how many."""
        others = list(session.scalars(select(models.Candidate).where(
            models.Candidate.state.in_(("queued", "gating", "soaking")))))
        for cand in others:
            actions.cancel(session, self.clock, cand.id, "noise-harness", reason)
        return len(others)

    def move_on(self, reason: str, *, cancel: bool) -> None:
        """Clear the train for the next candidate, as an operator would: a culprit search
        still running (it waits for a calm testbed) is stopped, and with ``cancel`` the open
        candidates are cancelled."""
        with session_scope(self.ctx.session_factory) as session:
            for cand in session.scalars(select(models.Candidate).where(
                    models.Candidate.state == CandidateState.REJECTED)):
                if bisection.is_running(cand.bisection):
                    actions.stop_culprit_finding(session, self.clock, cand.id, "noise-harness",
                                                 reason)
            if cancel:
                self._cancel_open(session, reason)

    def drive(self, out: Outcome, max_steps: int, say: Any) -> Outcome:
        """Drive the candidate holding ``out.sha`` until it ends (and its culprit finding).

        Until one holds it, an open candidate formation made of other commits (an isolation
        after a culprit search that could not finish) is cancelled: the harness judges only
        the commits it pushed, each in a candidate of its own."""
        start: float | None = None  # when a candidate holding out.sha was first seen

        def time_the_gate() -> None:
            """The gate's wall time: from the reconcile that formed the candidate to the end
            of the run that decided its gate (the step goes on with the soak's first run)."""
            nonlocal start
            if out.gate_wall_s is not None:
                return
            with session_scope(self.ctx.session_factory) as session:
                cand = _candidate_with(session, out.component, out.sha)
                if cand is None:
                    return
                start = time.monotonic() if start is None else start
                if CandidateState(cand.state) not in (CandidateState.GATING,
                                                      CandidateState.QUEUED):
                    out.gate_wall_s = time.monotonic() - start

        for _ in range(max_steps):
            self.step(time_the_gate)
            with session_scope(self.ctx.session_factory) as session:
                cand = _candidate_with(session, out.component, out.sha)
                if cand is None:
                    out.others_cancelled += self._cancel_open(
                        session, "noise harness: not the commit it measures")
                    continue
                out.candidate = cand.id
                out.changed = [str(c) for c in cand.changed]
                state = CandidateState(cand.state)
                out.excuses = [e.message for e in cand.excuses]
                out.soak_extended |= any(e.kind == "soak_extended" for e in cand.excuses)
                bisection = cand.bisection
                result = bisection.result if bisection is not None else None
                out.culprit = result.sha if result is not None and result.sha else None
                finding = bisection is not None and bisection.running
                runs_of = [(r.id, r.kind) for r in cand.runs]
                out.leaned = _leaned(cand.runs)
                waiting = _held(cand.excuses, self.busy_patience)
                if finding and _finding_waits(cand.excuses, self.busy_patience):
                    finding = False  # it waits for a calm testbed, as long as that takes
                if (state.is_final and not finding) or (waiting and not state.is_final):
                    out.end = "waiting" if not state.is_final else str(state)
                    if out.end == "waiting":
                        out.waited_for = _waits_for(cand.excuses)
                    break
        else:
            out.end = "stuck" if out.candidate else "not formed"
        if out.candidate is not None:
            out.gate_runs = sum(1 for _, k in runs_of if k == "gate")
            out.soak_runs = sum(1 for _, k in runs_of if k == "soak")
            out.runs_total = len(runs_of)
            out.gate_run_s = [round(self.run_seconds[i], 2) for i, k in runs_of
                              if k == "gate" and i in self.run_seconds]
        say(f"  {out.kind:<8} {out.name:<22} {out.component:<9} {out.sha[:10]} -> {out.end} "
            f"(gate {out.gate_runs}, soak {out.soak_runs} runs"
            + (f", gate {out.gate_wall_s:.0f} s" if out.gate_wall_s is not None else "") + ")")
        if out.end not in ("promoted",) and out.excuses:
            for text in out.excuses:
                say(f"      {text}")
        return out


def push(driver: Driver, repos: dict[str, Path], component: str, files: dict[str, str],
         title: str) -> str:
    sha = demo_world.commit(repos[component], files, title)
    driver.report(component, sha, title)
    return sha


def run_level(driver: Driver, repos: dict[str, Path], level: int, harmless: int,
              breakages: tuple[Breakage, ...], rng: random.Random, max_steps: int,
              say: Any, deadline: float | None = None) -> list[Outcome]:
    """Harmless candidates one after another (no new one after ``deadline``, a monotonic
    time), then each breakage. A breakage that is not blamed (rejected with only its component
    changed, or named by culprit finding) is followed at once by a commit that puts its
    component's known-good contents back, so the next candidate does not carry it too; a blamed
    one is held back by the pipeline itself, and put back at the end of the level."""
    outcomes: list[Outcome] = []
    names = sorted(repos)
    for i in range(harmless):
        if deadline is not None and time.monotonic() >= deadline:
            say(f"  time is up after {i} harmless candidates")
            break
        comp = rng.choice(names)
        note = f"Docs: note {level}.{i} ({rng.getrandbits(32):08x})\n"
        readme = repos[comp] / "README.md"
        text = (readme.read_text() if readme.exists() else "") + note
        title = f"README: a line about {comp} ({level}.{i})"
        sha = push(driver, repos, comp, {"README.md": text}, title)
        out = driver.drive(Outcome("harmless", title[:22], comp, sha), max_steps, say)
        outcomes.append(out)
        driver.move_on("noise harness: moving on", cancel=out.end in ("waiting", "stuck"))
    blamed: list[str] = []
    for brk in breakages:
        comp = brk.push.component
        sha = push(driver, repos, comp, brk.push.files, brk.push.title)
        out = driver.drive(Outcome("breakage", brk.name, comp, sha), max_steps, say)
        text = " ".join(out.excuses)
        out.fitting = out.end == "rejected" and any(w in text for w in brk.push.expect)
        outcomes.append(out)
        driver.move_on("noise harness: moving on", cancel=out.end != "rejected")
        if out.end == "rejected" and (out.changed == [comp] or out.culprit == sha):
            blamed.append(comp)
        else:
            push(driver, repos, comp, GOOD_FILES[comp], f"Back to the known-good {comp}")
    # They ride with the next level's first candidate (behaviourally harmless).
    for comp in sorted(set(blamed)):
        push(driver, repos, comp, GOOD_FILES[comp], f"Back to the known-good {comp}")
    return outcomes


def summary(level: int, outcomes: list[Outcome]) -> dict[str, Any]:
    harmless = [o for o in outcomes if o.kind == "harmless"]
    harmless_shas = {o.sha for o in harmless}
    culprit_named = [o.culprit for o in outcomes if o.culprit in harmless_shas]
    gates = [o.gate_wall_s for o in outcomes if o.gate_wall_s is not None]
    single = [s for o in outcomes for s in o.gate_run_s[:1]]
    return {
        "level": level,
        "harmless": len(harmless),
        "promoted": sum(o.end == "promoted" for o in harmless),
        "rejected": sum(o.end == "rejected" for o in harmless),
        "waiting": sum(o.end in ("waiting", "stuck", "not formed") for o in harmless),
        "held_for_a_person": sum(o.waited_for == "a person" for o in harmless),
        "soak_extended": sum(o.soak_extended for o in harmless),
        "leaned": sum(o.leaned for o in harmless),
        "false_rejections": [{"sha": o.sha, "excuses": o.excuses}
                             for o in harmless if o.end == "rejected"],
        "culprit_named_harmless": len(culprit_named),
        "breakages": _breakages([o for o in outcomes if o.kind == "breakage"]),
        "gate_wall_median_s": statistics.median(gates) if gates else None,
        "gate_run_median_s": statistics.median(single) if single else None,
    }


def _breakages(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    """Each breakage's end by name; a name met again (figures pooled from several runs) is
    numbered: "MTU mismatch (2)"."""
    found: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        name, n = o.name, 1
        while name in found:
            n += 1
            name = f"{o.name} ({n})"
        found[name] = {"breakage": o.name, "end": o.end, "fitting": o.fitting,
                       "gate_runs": o.gate_runs,
                       "soak_runs": o.soak_runs, "excuses": o.excuses}
    return found


def breakage_cell(b: dict[str, Any]) -> str:
    if b["end"] == "rejected":
        return ("caught" if b["fitting"] else "caught (odd excuse)") + \
            f", gate {b['gate_runs']} + soak {b['soak_runs']} runs"
    if b["end"] in ("waiting", "stuck", "not formed"):
        return f"waiting: {b['excuses'][-1][:80] if b['excuses'] else b['end']}"
    return f"**{b['end']}** (silent pass)" if b["end"] == "promoted" else b["end"]


def table(levels: list[dict[str, Any]]) -> str:
    lines = []
    for s in levels:
        lines += [f"load level {s['level']} ({s['load']}):",
                  f"  harmless: n {s['harmless']}, promoted {s['promoted']}, rejected "
                  f"{s['rejected']}, waiting {s['waiting']}, culprit named a harmless commit "
                  f"{s['culprit_named_harmless']}",
                  *(f"    false rejection {f['sha'][:10]}: {' | '.join(f['excuses'])}"
                    for f in s["false_rejections"]),
                  f"  harmless soaks extended {s['soak_extended']}, a series leaned worse in "
                  f"{s['leaned']}, held for a person {s['held_for_a_person']}",
                  *(f"  {name:<22} {breakage_cell(b)}" for name, b in s["breakages"].items()),
                  f"  gate wall time per candidate (its forming to the gate's decision), median: "
                  f"{_s(s['gate_wall_median_s'])}; its first gate run, median: "
                  f"{_s(s['gate_run_median_s'])}", ""]
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def targets(levels: list[dict[str, Any]], reference_s: float | None) -> str:
    """The issue's targets, one line each, in the form ``run_all.py`` reads."""
    lines = ["Targets (issue 12, noise harness):"]

    def line(scope: str, what: str, text: str, met: bool | None, shown: str) -> None:
        verdict = ("not measured" if met is None else "MET" if met
                   else "MISSED by " + shown.split()[0])
        lines.append(f"  {scope} [{what}] {text}: {verdict} ({shown})")

    gates = [s["gate_wall_median_s"] for s in levels if s["gate_wall_median_s"] is not None]
    for s in levels:
        scope, n = f"level{s['level']}", s["harmless"]
        if n:
            line(scope, "harmless", f"false rejections <= 1 of {n}", s["rejected"] <= 1,
                 f"{100 * s['rejected'] / n:.1f} % rejected")
        line(scope, "culprits", "culprit finding names no harmless commit",
             s["culprit_named_harmless"] == 0,
             f"{100 * s['culprit_named_harmless'] / max(n, 1):.0f} % of harmless named")
        judged = [b for b in s["breakages"].values() if b["end"] != "waiting"]
        if s["breakages"]:
            caught = sum(b["end"] == "rejected" and bool(b["fitting"]) for b in judged)
            silent = [b for b in s["breakages"].values()
                      if b["end"] not in ("rejected", "waiting")]
            line(scope, "breakages", "admitted breakages caught, none passed",
                 caught == len(judged) and not silent if judged else None,
                 f"{100 * caught / len(judged) if judged else 0:.0f} % of {len(judged)} caught")
        cuts = [b["soak_runs"] for b in s["breakages"].values()
                if b["breakage"] == BREAKAGES[0].name and b["end"] == "rejected"]
        if cuts:
            line(scope, "tc_cut", "6 % rate cut caught within 10 soak runs",
                 max(cuts) <= 10, f"{max(cuts)} soak runs at most, of {len(cuts)} caught")
    if gates and reference_s:
        ratio = statistics.median(gates) / reference_s
        line("all", "cost", "gate wall time <= 2.5x a single-run gate", ratio <= 2.5,
             f"{ratio:.2f} x")
    return "\n".join(lines)


def failures(levels: list[dict[str, Any]]) -> list[str]:
    """What breaks the issue's promises: false rejections beyond one per level, a culprit named
    on a harmless commit, a breakage promoted or rejected for another reason."""
    found = []
    for s in levels:
        if s["rejected"] > 1:
            found.append(f"level {s['level']}: {s['rejected']} harmless candidates rejected")
        if s["culprit_named_harmless"]:
            found.append(f"level {s['level']}: culprit finding named a harmless commit")
        for name, b in s["breakages"].items():
            if b["end"] == "rejected" and not b["fitting"]:
                found.append(f"level {s['level']}: {name} rejected for another reason")
            elif b["end"] not in ("rejected", "waiting"):
                found.append(f"level {s['level']}: {name} ended {b['end']} (not caught)")
            elif b["end"] == "waiting" and not b["excuses"]:
                found.append(f"level {s['level']}: {name} waits without saying why")
    return found


def run(root: Path, *, levels: tuple[int, ...], harmless: int,
        breakages: dict[int, tuple[Breakage, ...]], soak_runs: int, seed: int, subnet: str,
        max_extra_runs: int | None = None, busy_patience: int = BUSY_PATIENCE,
        minutes_per_level: float | None = None, code: str | None = None,
        say: Any = print) -> dict[str, Any]:
    """Build the world, certify its first heads, then every load level (with the breakages
    given for it); the figures. ``code``: the code's fingerprint when the run began (default:
    now)."""
    code = code or code_fingerprint()
    interval = 600
    config = build_world(root / "world", subnet, soak_runs, interval, max_extra_runs)
    settings = load_settings(config_file=config, data_dir=root / "data")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    driver = Driver(settings, timedelta(seconds=60), busy_patience)
    with session_scope(driver.ctx.session_factory) as session:
        components.sync_from_config(session, settings.config.components,
                                    settings.config.testbeds, driver.clock)
    repos = {c.name: Path(c.url) for c in settings.config.components}
    # Soak runs, control runs, infra retries: bounded, so a stuck pipeline ends the candidate.
    max_steps = 40 * soak_runs + 200
    rng = random.Random(seed)
    started = time.monotonic()
    for name, repo in repos.items():
        sha, title = demo_world.head(repo)
        driver.report(name, sha, title)
    first = driver.drive(Outcome("initial", "first heads", "api", demo_world.head(repos["api"])[0]),
                         max_steps, say)
    if first.end != "promoted":
        raise SystemExit(f"the first heads were not promoted ({first.end}): {first.excuses}")
    results = []
    for level in levels:
        say(f"load level {level}:")
        budget = 3600.0 * 4
        with tempfile.TemporaryDirectory(prefix="noise-load-") as scratch, \
                load(level, Path(scratch), budget) as what:
            t0 = time.monotonic()
            deadline = t0 + 60 * minutes_per_level if minutes_per_level is not None else None
            outs = run_level(driver, repos, level, harmless, breakages.get(level, ()), rng,
                             max_steps, say, deadline)
            s = summary(level, outs)
            s.update(load=what, seconds=round(time.monotonic() - t0, 1),
                     candidates=[asdict(o) for o in outs])
            results.append(s)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    seconds = round(time.monotonic() - started, 1)
    return {"when": when, "code": code, "single_run_gate_s": driver.single_sided_s(),
            "harmless_per_level": min((s["harmless"] for s in results), default=0),
            "harmless_asked": harmless, "soak_runs": soak_runs,
            "max_extra_runs": settings.soak_policy().max_extra_runs, "seconds": seconds,
            "initial": asdict(first), "levels": results, "failures": failures(results),
            "batches": [{"when": when, "commit": _commit(), "seed": seed, "seconds": seconds,
                         "single_run_s": driver.single_sided_runs(),
                         "harmless": {str(s["level"]): s["harmless"] for s in results}}]}


CODE = ("certifier", "workers")
"""The code under test, which figures pooled across runs must share: the whole service (a
change anywhere in it may change a verdict, so none is guessed harmless) but the dashboard's
pages, with this harness and the statistics libraries' versions."""
LIBRARIES = ("numpy", "scipy")

ROOT = Path(__file__).resolve().parent.parent


def code_fingerprint(root: Path = ROOT) -> str:
    """A hash of the code under test as it is on disk, committed or not: the files git tracks
    under ``certifier/`` (but ``certifier/web/``) and ``workers/`` (every file there outside a
    git checkout), this harness, and the versions of ``LIBRARIES``."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", *CODE],
                                capture_output=True, check=True).stdout.decode().split("\0")
        files = [root / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        files = [p for d in CODE for p in (root / d).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
    files = sorted(p for p in files if p.is_file()
                   and p.relative_to(root).parts[:2] != ("certifier", "web"))
    digest = hashlib.sha256()
    for path in [*files, root / "benchmarks" / "noise_harness.py"]:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in LIBRARIES:
        digest.update(f"{name}=={importlib.metadata.version(name)}\0".encode())
    return digest.hexdigest()[:16]


def _commit() -> str | None:
    """The checkout's commit, ``+dirty`` when it has changes; None outside git."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                *CODE, "benchmarks/noise_harness.py"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


class Unpoolable(Exception):
    """Figures that cannot be pooled with a file's: other code or another soak."""


def pool(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The figures of an earlier run (``old``, as this harness wrote them) and a new one's,
    pooled: each level's candidates together and summed up again, the batches listed. Only
    figures of the same code and soak pool; ``Unpoolable`` says what differs."""
    for key, what in (("code", "the code under test"), ("soak_runs", "the soak's runs"),
                      ("max_extra_runs", "the soak's extension")):
        if old.get(key) != new.get(key):
            raise Unpoolable(f"{what} differs: {old.get(key)!r} in the file, {new.get(key)!r} "
                             "now; start a new file to measure this code")
    by_level: dict[int, dict[str, Any]] = {s["level"]: s for s in old["levels"]}
    for s in new["levels"]:
        before = by_level.get(s["level"])
        if before is None:
            by_level[s["level"]] = s
            continue
        candidates = before["candidates"] + s["candidates"]
        merged = summary(s["level"], [Outcome(**c) for c in candidates])
        merged.update(load=s["load"], seconds=round(before["seconds"] + s["seconds"], 1),
                      candidates=candidates)
        by_level[s["level"]] = merged
    levels = [by_level[k] for k in sorted(by_level)]
    batches = old.get("batches", []) + new["batches"]
    singles = [t for b in batches for t in b.get("single_run_s", [])]
    return {**new, "single_run_gate_s": statistics.median(singles) if singles else None,
            "harmless_per_level": min((s["harmless"] for s in levels), default=0),
            "seconds": round(old["seconds"] + new["seconds"], 1), "levels": levels,
            "failures": failures(levels), "batches": batches}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few harmless candidates per level (3) instead of 30")
    parser.add_argument("--ci", action="store_true",
                        help="the CI test's size: 1 harmless per level, the functional "
                             "breakages at every level and the tc cut at the first")
    parser.add_argument("--harmless", type=int, help="harmless candidates per load level")
    parser.add_argument("--levels", default="0,1,2", help="busy workers per level: 0,1,2")
    parser.add_argument("--breakages", default="all",
                        help="'all', 'none', or names' first words: tc,packet,MTU,unreachable,"
                             "write-through,upgrade")
    parser.add_argument("--soak-runs", type=int, default=10, help="soak runs per candidate")
    parser.add_argument("--max-extra-runs", type=int,
                        help="soak runs beyond the plan while undecided (default: the README's 8)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--subnet", default="198.18.212.0/24")
    parser.add_argument("--json", type=Path, default=Path("noise_harness.json"))
    parser.add_argument("--append", action="store_true",
                        help="pool this run's figures with those already in --json (same code "
                             "and soak only), so the full size may be reached over several runs")
    parser.add_argument("--minutes-per-level", type=_positive,
                        help="start no harmless candidate after this many minutes of a level "
                             "(its breakages still run)")
    parser.add_argument("--keep", type=Path, help="build the world here and keep it")
    parser.add_argument("--single-gate-s", type=float,
                        help="the single-run gate's wall time to compare with (default: the "
                             "median one-sided run here, the known-good's baseline runs)")
    opts = parser.parse_args()
    harmless = opts.harmless if opts.harmless is not None else 3 if opts.quick else 30
    chosen = select_breakages(opts.breakages)
    levels = tuple(int(x) for x in opts.levels.split(","))
    code = code_fingerprint()
    earlier = json.loads(opts.json.read_text()) if opts.append and opts.json.exists() else None
    if earlier is not None:
        wanted = {"code": code, "soak_runs": opts.soak_runs}
        if opts.max_extra_runs is not None:
            wanted["max_extra_runs"] = opts.max_extra_runs
        differ = [f"{k} {earlier.get(k)!r} there, {v!r} now" for k, v in wanted.items()
                  if earlier.get(k) != v]
        if differ:
            raise SystemExit(f"{opts.json} holds figures that cannot be pooled with this run's "
                             f"({'; '.join(differ)}): start a new file")
    # each pooled batch draws other components and notes
    seed = opts.seed + len(earlier.get("batches", [])) if earlier else opts.seed

    def say(text: str) -> None:
        print(text, flush=True)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")  # unwinds: the load is killed

    signal.signal(signal.SIGTERM, stop)

    with contextlib.ExitStack() as stack:
        root = opts.keep or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="noise-harness-")))
        figures = run(root, levels=levels, harmless=1 if opts.ci else harmless,
                      breakages=ci_breakages(levels) if opts.ci
                      else dict.fromkeys(levels, chosen),
                      soak_runs=opts.soak_runs, seed=seed, subnet=opts.subnet, say=say,
                      max_extra_runs=opts.max_extra_runs,
                      minutes_per_level=opts.minutes_per_level, code=code)
    if code_fingerprint() != code:
        kept = opts.json.with_suffix(".unpooled.json")
        kept.write_text(json.dumps(figures, indent=2, default=str))
        raise SystemExit(f"the code changed during the run ({code} at the start, "
                         f"{code_fingerprint()} now): its figures are in {kept}, not pooled")
    if earlier is not None:
        try:
            figures = pool(earlier, figures)
        except Unpoolable as exc:
            kept = opts.json.with_suffix(".unpooled.json")
            kept.write_text(json.dumps(figures, indent=2, default=str))
            raise SystemExit(f"not pooled with {opts.json}: {exc}; this run's figures are in "
                             f"{kept}") from None
    opts.json.write_text(json.dumps(figures, indent=2, default=str))
    print(f"noise harness ({figures['harmless_per_level']} harmless per level, soak of "
          f"{opts.soak_runs} runs, {figures['seconds'] / 60:.1f} min over "
          f"{len(figures['batches'])} run(s)):")
    print(table(figures["levels"]))
    print(targets(figures["levels"], opts.single_gate_s or figures["single_run_gate_s"]))
    print()
    for line in figures["failures"]:
        print(f"FAILED: {line}")
    print(f"figures in {opts.json}")
    return 1 if figures["failures"] else 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def ci_breakages(levels: tuple[int, ...]) -> dict[int, tuple[Breakage, ...]]:
    """The CI size's breakages: the functional ones at every level, the tc cut at the first."""
    functional = tuple(b for b in BREAKAGES if b.functional)
    return {level: functional + (BREAKAGES[:1] if i == 0 else ())
            for i, level in enumerate(levels)}


def select_breakages(spec: str) -> tuple[Breakage, ...]:
    if spec == "all":
        return BREAKAGES
    if spec == "none":
        return ()
    words = [w.strip().lower() for w in spec.split(",") if w.strip()]
    chosen = tuple(b for b in BREAKAGES if b.name.split()[0].lower() in words)
    if len(chosen) != len(words):
        raise SystemExit(f"unknown breakage in {spec!r}: choose from "
                         + ", ".join(b.name.split()[0] for b in BREAKAGES))
    return chosen


if __name__ == "__main__":
    sys.exit(main())
