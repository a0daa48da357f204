"""Change-point location: E-Divisive (energy statistic, permutation test) over one series.

This answers "where did it begin?", never "is it worse?": the gate is the rank test in
:mod:`certifier.domain.detector`. Run after every soak run as a gate, plain E-Divisive rejected
half of all good candidates in our measurements (an outlier at the newest run looks like a
change), so a change point is reported only with at least ``min_after`` runs after it and only
if it persists to the newest runs of its segment. Permutations use a fixed seed, so the same
series always gets the same answer.

Matteson & James (2014), "A nonparametric approach for multiple change point analysis of
multivariate data", with exponent 1 and binary segmentation, as in apache-otava's original mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DIP_RUNS = 3
"""A dip this long or shorter is noise, not a change: it must never be located as one."""


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """The series is different from ``index`` on: ``values[index]`` is the first new value."""

    index: int
    p_value: float
    median_before: float
    median_after: float

    @property
    def shift_pct(self) -> float:
        """Change of the median at this point, in percent of the median before."""
        if self.median_before == 0:
            return 0.0 if self.median_after == 0 else float("inf")
        return 100.0 * (self.median_after - self.median_before) / abs(self.median_before)


def _energy_split(batch: FloatArray, min_size: int) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Best split of each row of ``batch`` (rows by n) and its energy statistic Q̂.

    2-D prefix sums of the distance matrix give every split's within- and between-part sums at
    once, so one call scores all splits of all permuted copies.
    """
    rows, n = batch.shape
    dist = np.abs(batch[:, :, None] - batch[:, None, :])
    prefix = np.zeros((rows, n + 1, n + 1))
    prefix[:, 1:, 1:] = dist.cumsum(axis=1).cumsum(axis=2)
    taus = np.arange(min_size, n - min_size + 1)
    total = prefix[:, n, n][:, None]
    left = prefix[:, taus, taus]
    right = total - 2.0 * prefix[:, taus, n] + left
    cross = (total - left - right) / 2.0
    n_left = taus.astype(np.float64)
    n_right = (n - taus).astype(np.float64)
    energy = (2.0 * cross / (n_left * n_right) - left / (n_left * (n_left - 1))
              - right / (n_right * (n_right - 1)))
    q = n_left * n_right / n * energy
    best = np.argmax(q, axis=1)
    return taus[best], q[np.arange(rows), best]


def _significant_split(
    segment: FloatArray, min_size: int, permutations: int, rng: np.random.Generator
) -> tuple[int, float] | None:
    """The best split of ``segment`` and its permutation p-value, if the segment can be split."""
    n = len(segment)
    if n < 2 * min_size or float(np.ptp(segment)) == 0.0:
        return None
    tau, q = _energy_split(segment[None, :], min_size)
    observed = float(q[0])
    exceed = 0
    chunk = max(1, min(permutations, 4_000_000 // (n * n)))
    done = 0
    while done < permutations:
        size = min(chunk, permutations - done)
        shuffled = rng.permuted(np.tile(segment, (size, 1)), axis=1)
        _, q_perm = _energy_split(shuffled, min_size)
        exceed += int(np.count_nonzero(q_perm >= observed - 1e-12 * abs(observed)))
        done += size
    return int(tau[0]), (exceed + 1) / (permutations + 1)


def e_divisive(
    values: Sequence[float] | FloatArray,
    *,
    alpha: float = 0.05,
    permutations: int = 199,
    min_size: int = 5,
    seed: int = 0,
) -> list[ChangePoint]:
    """Every significant change point of ``values``, by binary segmentation, sorted by index.

    Each part of a split keeps at least ``min_size`` values, so no change point has fewer than
    ``min_size`` values after it. Non-finite values are not allowed here (the detector drops
    them first).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or len(data) < 2 * min_size or not np.all(np.isfinite(data)):
        return []
    rng = np.random.default_rng(seed)
    found: list[tuple[int, float]] = []
    pending = [(0, len(data))]
    while pending:
        start, stop = pending.pop(0)
        split = _significant_split(data[start:stop], min_size, permutations, rng)
        if split is None or split[1] > alpha:
            continue
        index = start + split[0]
        found.append((index, split[1]))
        pending += [(start, index), (index, stop)]
    found.sort()
    bounds = [0] + [i for i, _ in found] + [len(data)]
    return [
        ChangePoint(index, p, float(np.median(data[bounds[k]:index])),
                    float(np.median(data[index:bounds[k + 2]])))
        for k, (index, p) in enumerate(found)
    ]


def locate_change(
    values: Sequence[float] | FloatArray,
    *,
    worse: Literal["lower", "higher"] | None = None,
    first: int = 0,
    min_after: int = 5,
    alpha: float = 0.05,
    permutations: int = 199,
    seed: int = 0,
) -> ChangePoint | None:
    """Where a lasting change began, at or after index ``first``, or None.

    A change point counts only if at least ``min_after`` values follow it and at least half its
    shift still holds both in its newest ``min_after`` values and in what follows it once the
    ``DIP_RUNS`` most shifted values are set aside; so a 1-3-run dip, at the end of the series
    or in its middle, is not reported as a change. With ``worse``
    set, only a change in that direction counts; the earliest such change is returned (a ramp
    is reported where it starts).
    """
    data = np.asarray(values, dtype=np.float64)
    points = e_divisive(data, alpha=alpha, permutations=permutations, min_size=min_after,
                        seed=seed)
    bounds = [p.index for p in points] + [len(data)]
    for point, stop in zip(points, bounds[1:], strict=True):
        if point.index < first or stop - point.index < min_after:
            continue
        shift = point.median_after - point.median_before
        if shift == 0 or (worse == "lower" and shift > 0) or (worse == "higher" and shift < 0):
            continue
        after = np.sort(data[point.index:stop])
        dip = max(0, min(DIP_RUNS, len(after) - 2))
        held = after[dip:] if shift < 0 else after[:len(after) - dip]
        newest = float(np.median(data[stop - min_after:stop])) - point.median_before
        rest = float(np.median(held)) - point.median_before
        if newest / shift < 0.5 or rest / shift < 0.5:
            continue
        return point
    return None
