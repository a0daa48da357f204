"""A/B rounds: the suites run on the candidate and on a control deployment of the known-good,
interleaved, so that both are measured in the same minutes on the same machine (issue #12).

The runner builds the two testbeds and deploys both sides once; this module decides whether a
run is measured A/B at all (:func:`single_sided_because`) and runs the rounds (:func:`measure`):
round r runs every enabled suite on both sides, the candidate first in even rounds and the
control first in odd ones, so an order effect (a warm cache, a host that just got busy) falls on
each side equally often. A round past ``min_rounds`` measures only the suites the statistics
name (those with an undecided series another round could decide). Every measurement is tagged
with its side and round.

How results are represented, for judgement and storage:

- The candidate's suites keep their names (``ping``, ``bandwidth``…). Round 0 keeps all its
  checks; later rounds keep only the checks that failed there (a pass repeated says nothing new,
  and the rounds stop after a round in which a check failed).
- The control's suites are named ``control.<suite>``; their measurements carry ``side=control``
  and the suite's own name (the same series key as the candidate's). A control check that fails
  says the testbed is broken, not the candidate: that result gets an ``infra_error`` naming the
  checks (and keeps only the failed checks, renamed ``control.<suite>``), so the run is an
  ``infra_error`` unless the candidate itself failed a check. A control tool failure is an
  ``infra_error`` too, prefixed ``control testbed:``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, replace
from typing import Any

from certifier.domain.results import Measurement, Side, SuiteResult
from certifier.settings import AbConfig
from workers.testbed.base import TestbedSpec

CONTROL_PREFIX = "control."

# Asked after each round once ``min_rounds`` are done: should another round be measured, and of
# which suites? It gets every measurement so far (both sides, from suites that ran cleanly) and
# the rounds done, and answers True (every suite again), False or an empty set (no more rounds),
# or the names of the suites to measure again.
MoreRounds = Callable[[list[Measurement], int], bool | Set[str]]


def stop_at_min(measurements: list[Measurement], rounds_done: int) -> bool:
    """Never more than ``min_rounds`` (the runner's default asks the A/B statistics)."""
    return False


@dataclass(frozen=True, slots=True)
class Rounds:
    """How many rounds: ``least`` always (unless a round fails), then up to ``most`` while
    ``more`` says so. ``share``: each round measures 1/share of the configured time."""

    least: int
    most: int
    more: MoreRounds = stop_at_min
    share: int = 1


def rounds_for(config: AbConfig, kind: str, more: MoreRounds) -> Rounds:
    """Soak runs measure a fixed number of rounds; gate and bisect runs ask ``more``."""
    least = config.soak_rounds if kind == "soak" else config.min_rounds
    share = least if config.round_time == "split" else 1
    if kind == "soak":
        return Rounds(least, least, share=share)
    return Rounds(least, config.max_rounds, more, share)


# Per suite, the option that says how long it measures (a count of pings, or seconds), and the
# least a round may get: with ``ab.round_time: split`` each round measures its share.
TIMED: dict[str, tuple[str, int]] = {
    "ping": ("count", 5), "bandwidth": ("duration_s", 1), "storage": ("runtime_s", 1)}


def round_options(name: str, options: Any, share: int) -> Any:
    """Suite ``name``'s ``options`` (a dataclass) with 1/``share`` of their measuring time.

    Rounded down to whole pings or seconds (iperf3 and the storage suite measure whole
    seconds; rounding up would make 2 rounds of a 3 s test cost 4 s a side), never below the
    floor in ``TIMED`` (nor above the configured value, when that is less).
    """
    timed = TIMED.get(name)
    if timed is None or share <= 1:
        return options
    field, least = timed
    value = getattr(options, field)
    return replace(options, **{field: max(min(least, value), math.floor(value / share))})


def single_sided_because(config: AbConfig, kind: str, has_base: bool,
                         spec: TestbedSpec) -> str | None:
    """Why a run of ``kind`` on ``spec`` is measured on the candidate alone; None for A/B."""
    if not config.enabled:
        return "A/B runs are off (ab.enabled: false)"
    if kind not in config.run_kinds:
        return f"{kind} runs are not A/B runs (ab.run_kinds)"
    if not has_base:
        return "there is no known-good to compare with yet"
    if spec.driver == "ssh":
        return ("the ssh driver's lab hosts cannot hold a second, control deployment beside "
                "the candidate's")
    if spec.plan is not None and spec.plan.controller is not None:
        return ("the topology links the controller into the root namespace, where a twin "
                "control testbed would need the same address")
    return None


def _tagged(result: SuiteResult, side: Side, round_: int) -> SuiteResult:
    measurements = [replace(m, side=side, round=round_) for m in result.measurements]
    if side is Side.CANDIDATE:
        checks = result.checks if round_ == 0 else [c for c in result.checks if not c.passed]
        return SuiteResult(result.suite, list(checks), measurements, result.infra_error,
                           dict(result.tool_versions), result.log)
    failed = [replace(c, suite=CONTROL_PREFIX + c.suite) for c in result.checks if not c.passed]
    infra = f"control testbed: {result.infra_error}" if result.infra_error else None
    if failed and infra is None:
        infra = ("the known-good failed on the control testbed, so the testbed is broken, not "
                 "the candidate: " + "; ".join(
                     f"{c.name}" + (f" ({c.message})" if c.message else "") for c in failed))
    return SuiteResult(CONTROL_PREFIX + result.suite, failed, measurements, infra,
                       dict(result.tool_versions), result.log)


def broken(results: Sequence[SuiteResult]) -> bool:
    """Is there no point in another round: a failed check or a tool failure on either side?"""
    return any(r.infra_error or not all(c.passed for c in r.checks) for r in results)


def measure(suites: Sequence[str], run_suite: Callable[[str, Side], SuiteResult],
            rounds: Rounds, note: Callable[[str], None]) -> tuple[list[SuiteResult], int]:
    """Run ``suites`` on both sides, round after round; the tagged results and rounds done.

    ``run_suite(name, side)`` runs one suite on one side's testbed. The rounds stop early after
    a round in which something failed (a functional failure fails at once; a broken control
    makes the run an infra error either way). Past ``rounds.least``, ``rounds.more`` says
    whether to go on and with which suites.
    """
    results: list[SuiteResult] = []
    done = 0
    wanted = list(suites)
    while wanted and done < rounds.most:
        order = (Side.CANDIDATE, Side.CONTROL) if done % 2 == 0 else (Side.CONTROL,
                                                                      Side.CANDIDATE)
        this_round: list[SuiteResult] = []
        for name in wanted:
            for side in order:
                result = _tagged(run_suite(name, side), side, done)
                note(f"round {done} {side}: suite {name}: {len(result.checks)} checks kept, "
                     f"{len(result.measurements)} measurements"
                     + (f", infra error: {result.infra_error}" if result.infra_error else ""))
                this_round.append(result)
        results.extend(this_round)
        done += 1
        if broken(this_round):
            note(f"A/B: stopped after round {done - 1}: a check or a tool failed")
            break
        if done < rounds.least:
            continue
        if done >= rounds.most:
            break
        more = rounds.more([m for r in results if not r.infra_error for m in r.measurements],
                           done)
        again = list(suites) if more is True else [n for n in suites if more and n in more]
        if again and again != wanted:
            settled = [n for n in suites if n not in again]
            note(f"A/B: round {done} measures {', '.join(again)} only: the series of "
                 f"{', '.join(settled)} are decided, or left to the soak")
        wanted = again
    return results, done
