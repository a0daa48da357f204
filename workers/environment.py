"""Host pressure over a span of time: what the machine itself was doing while a suite ran.

A run's numbers mean something only if the machine was in its usual state while they were
measured. This module reads the kernel's own accounting at the start and at the end of a span
(one suite, one calibration probe) and turns the two readings into figures for that span:

* **Pressure stall information** (``/proc/pressure/{cpu,io,memory}``, Linux ≥ 4.20 with
  ``CONFIG_PSI``): the ``some`` line's ``total`` is the microseconds during which at least one
  task waited for that resource; its growth over the span divided by the span's length is the
  percentage of the span spent stalled. ``avg10`` (the kernel's own 10 s average at the end of
  the span) is kept too, for people reading the figures.
* **Load average** (``/proc/loadavg``) per core, at the end of the span.
* **CPU steal and iowait** (``/proc/stat``, first ``cpu`` line): their share of all CPU time
  that passed during the span. Steal is the hypervisor giving our virtual CPUs to someone else.

Everything is read defensively: a file that is missing (a container without ``/proc/pressure``,
an old kernel) or holds something unexpected gives ``None`` for that figure and a note saying
"not available", never an exception — the environment check must not be what fails a run. The
judgement of these figures against the testbed's history is pure and lives in
:mod:`certifier.domain.environment`; the probe is :mod:`workers.calibration`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certifier.domain.environment import HOST_FIGURES

RESOURCES = ("cpu", "io", "memory")
_PRESSURE_LINE = re.compile(r"^(some|full)((?:\s+[a-z0-9]+=\S+)+)\s*$")
PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Pressure:
    """The ``some`` line of one ``/proc/pressure`` file: stalled microseconds so far, avg10 %."""

    total_us: int
    avg10: float


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Jiffies from ``/proc/stat``'s first ``cpu`` line (guest time is inside ``user``)."""

    total: int
    iowait: int
    steal: int


@dataclass(frozen=True, slots=True)
class HostSample:
    """One reading of the kernel's counters; ``None`` where a file was absent or unreadable."""

    at: float  # time.monotonic()
    pressure: dict[str, Pressure | None]
    cpu: CpuTimes | None
    load1: float | None
    cores: int
    notes: tuple[str, ...] = ()


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_pressure(text: str) -> Pressure | None:
    """The ``some`` line of a ``/proc/pressure/*`` file; None if there is none or it is garbage.

    ``some avg10=0.12 avg60=0.05 avg300=0.01 total=123456``; newer kernels may add fields,
    so fields are read by name, and a line missing ``avg10`` or ``total`` does not count.
    """
    for line in text.splitlines():
        match = _PRESSURE_LINE.match(line.strip())
        if not match or match.group(1) != "some":
            continue
        fields = dict(item.split("=", 1) for item in match.group(2).split())
        avg10 = _finite(fields.get("avg10", ""))
        total = fields.get("total", "")
        if avg10 is None or not total.isdigit():
            return None
        return Pressure(total_us=int(total), avg10=avg10)
    return None


def parse_cpu_stat(text: str) -> CpuTimes | None:
    """The aggregate ``cpu`` line of ``/proc/stat``; None when absent or malformed.

    Fields: user nice system idle iowait irq softirq steal [guest guest_nice]. Kernels before
    2.6.11 had no steal column; such a line counts steal as 0.
    """
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] != "cpu":
            continue
        numbers = parts[1:9]
        if len(numbers) < 5 or not all(n.isdigit() for n in numbers):
            return None
        values = [int(n) for n in numbers]
        return CpuTimes(total=sum(values), iowait=values[4],
                        steal=values[7] if len(values) > 7 else 0)
    return None


def parse_loadavg(text: str) -> float | None:
    """The 1-minute load average from ``/proc/loadavg``; None when malformed."""
    parts = text.split()
    return _finite(parts[0]) if parts else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def read_sample(proc: Path = PROC) -> HostSample:
    """Read every counter once; never raises."""
    notes: list[str] = []
    pressure: dict[str, Pressure | None] = {}
    for resource in RESOURCES:
        text = _read(proc / "pressure" / resource)
        pressure[resource] = parse_pressure(text) if text is not None else None
        if pressure[resource] is None:
            why = "missing" if text is None else "unreadable"
            notes.append(f"{resource} pressure: not available "
                         f"({proc / 'pressure' / resource} {why})")
    stat_text = _read(proc / "stat")
    cpu = parse_cpu_stat(stat_text) if stat_text is not None else None
    if cpu is None:
        notes.append(f"cpu steal and iowait: not available ({proc / 'stat'} "
                     f"{'missing' if stat_text is None else 'unreadable'})")
    load_text = _read(proc / "loadavg")
    load1 = parse_loadavg(load_text) if load_text is not None else None
    if load1 is None:
        notes.append(f"load average: not available ({proc / 'loadavg'})")
    return HostSample(at=time.monotonic(), pressure=pressure, cpu=cpu, load1=load1,
                      cores=os.cpu_count() or 1, notes=tuple(notes))


def _pct(part: float, whole: float) -> float:
    return round(max(0.0, min(100.0, 100.0 * part / whole)), 3)


def span_figures(start: HostSample, end: HostSample) -> dict[str, Any]:
    """The figures of the span between two samples (see the module docstring).

    Keys are figure names of :data:`certifier.domain.environment.FIGURES` plus ``seconds``,
    ``<resource>_pressure_avg10`` and ``notes``; a figure that cannot be worked out is None.
    A counter that went backwards (a container restarted, a wrapped counter) counts as
    not available rather than as a negative percentage.
    """
    seconds = max(end.at - start.at, 0.0)
    figures: dict[str, Any] = {"seconds": round(seconds, 3)}
    notes = list(dict.fromkeys(start.notes + end.notes))
    for resource in RESOURCES:
        a, b = start.pressure.get(resource), end.pressure.get(resource)
        key = f"{resource}_pressure_pct"
        figures[key] = None
        figures[f"{resource}_pressure_avg10"] = b.avg10 if b is not None else None
        if a is None or b is None or seconds <= 0:
            continue
        if b.total_us < a.total_us:
            notes.append(f"{resource} pressure: counter went backwards; not available")
            continue
        figures[key] = _pct((b.total_us - a.total_us) / 1e6, seconds)
    figures["cpu_steal_pct"] = figures["iowait_pct"] = None
    if start.cpu is not None and end.cpu is not None:
        spent = end.cpu.total - start.cpu.total
        steal, iowait = end.cpu.steal - start.cpu.steal, end.cpu.iowait - start.cpu.iowait
        if spent > 0 and steal >= 0 and iowait >= 0:
            figures["cpu_steal_pct"] = _pct(steal, spent)
            figures["iowait_pct"] = _pct(iowait, spent)
    figures["load_per_core"] = (round(end.load1 / max(end.cores, 1), 3)
                                if end.load1 is not None else None)
    figures["notes"] = notes
    return figures


def combine(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """Several spans' figures as one: each figure weighted by its span's length.

    Used for the run as a whole (all its suites); a figure missing from some spans is
    averaged over the spans that have it.
    """
    combined: dict[str, Any] = {"seconds": round(sum(s.get("seconds") or 0.0 for s in spans), 3)}
    keys = list(HOST_FIGURES)
    keys += [f"{r}_pressure_avg10" for r in RESOURCES]
    for key in keys:
        weighted = [(s[key], s.get("seconds") or 0.0) for s in spans
                    if isinstance(s.get(key), int | float)]
        weight = sum(w for _, w in weighted)
        if not weighted:
            combined[key] = None
        elif weight <= 0:
            combined[key] = round(max(v for v, _ in weighted), 3)
        else:
            combined[key] = round(sum(v * w for v, w in weighted) / weight, 3)
    combined["notes"] = list(dict.fromkeys(n for s in spans for n in s.get("notes") or ()))
    return combined


@dataclass
class Recorder:
    """Collects a run's spans and probes; :meth:`summary` is what is stored with the run.

    ``sample`` is injectable so tests can feed captured ``/proc`` trees.
    """

    sample: Callable[[], HostSample] = read_sample
    spans: dict[str, dict[str, Any]] = field(default_factory=dict)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Measure the host while the body runs (a suite); recorded even if the body raises."""
        start = self.sample()
        try:
            yield
        finally:
            label, n = name, 2
            while label in self.spans:  # a suite run twice (A/B rounds) keeps every span
                label, n = f"{name}#{n}", n + 1
            self.spans[label] = span_figures(start, self.sample())

    def summary(self) -> dict[str, Any]:
        """``host`` (all suite spans combined), ``spans`` and ``probes``: JSON for the run row."""
        return {"version": 1, "host": combine(list(self.spans.values())),
                "spans": dict(self.spans), "probes": dict(self.probes)}
