"""One run as the dashboard's run page and the API's run detail show it: its checks, and its
measurements per series with the candidate's and the control's values round by round.

An A/B run (``runs.rounds`` > 0) measured every series on the candidate and on a control
deployment of the known-good, interleaved; a single-sided run has the candidate's values only
(round 0). Read-only, like the rest of ``read``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from certifier.db import models
from certifier.domain.results import Side
from certifier.pipeline import queries
from certifier.pipeline.read.records import NamedSeries, RunView, run_view


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True, slots=True)
class AbSeries(NamedSeries):
    """One series of one run: per round, the candidate's value and the control's (None where a
    side did not measure it in that round; the median where it measured it more than once)."""

    rounds: tuple[int, ...]
    candidate: tuple[float | None, ...]
    control: tuple[float | None, ...]

    @property
    def candidate_median(self) -> float | None:
        return _median(self.candidate)

    @property
    def control_median(self) -> float | None:
        return _median(self.control)

    @property
    def change_pct(self) -> float | None:
        """The candidate's median against the control's, in percent (signed, not 'worse')."""
        cand, ctrl = self.candidate_median, self.control_median
        if cand is None or ctrl is None or ctrl == 0:
            return None
        return 100.0 * (cand - ctrl) / abs(ctrl)


def ab_series(rows: Sequence[models.MeasurementRow]) -> tuple[AbSeries, ...]:
    """The run's measurement rows grouped per series, sides and rounds apart."""
    values: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    first: dict[str, models.MeasurementRow] = {}
    for row in rows:
        first.setdefault(row.series, row)
        values[(row.series, row.side, row.round)].append(row.value)
    found = []
    for key, row in first.items():
        rounds = tuple(sorted({r for (k, _, r) in values if k == key}))

        def side(name: Side, key: str = key, rounds: tuple[int, ...] = rounds) -> tuple[
                float | None, ...]:
            return tuple(_median(values.get((key, name.value, r), [])) for r in rounds)

        found.append(AbSeries(
            key=key, suite=row.suite, metric=row.metric,
            labels={str(k): str(v) for k, v in (row.labels or {}).items()}, unit=row.unit,
            better=row.better, rounds=rounds, candidate=side(Side.CANDIDATE),
            control=side(Side.CONTROL)))
    found.sort(key=lambda s: (s.suite, s.metric, s.key))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class RunPage:
    run: RunView
    candidate_id: int
    worker: str | None
    rounds: int
    checks: tuple[models.CheckRow, ...]
    series: tuple[AbSeries, ...]
    log: str

    @property
    def ab(self) -> bool:
        return self.rounds > 0


def run_page(session: Session, run_id: int) -> RunPage:
    """Everything the run page shows; NotFound for an unknown run."""
    run = queries.run_detail(session, run_id)
    return RunPage(run=run_view(run), candidate_id=run.candidate_id, worker=run.worker,
                   rounds=run.rounds, checks=tuple(run.checks),
                   series=ab_series(run.measurements), log=run.log)
