"""Every benchmark in one command: each runs as a subprocess, and docs/benchmarks.md gets the lot.

Each benchmark script prints its own table (benchmarks/README.md). This script runs them one after
the other (they would disturb each other's figures side by side on a small machine), keeps each
one's table, reads the figures that matter out of it — the value, the reference it is measured
against in the same run and their ratio, the target and whether it was met — and writes
docs/benchmarks.md: the date, the machine, the targets, a growth table (the same benchmark at 1x,
10x and 100x data) and every table as printed.

A benchmark that fails, times out or prints nothing readable is reported as such in the document;
the others still run. One that cannot run here (no root for the testbed, no ``wrk``, no
PostgreSQL) is marked skipped with the reason.

Usage: python benchmarks/run_all.py [--quick] [--only NAME,...] [--output docs/benchmarks.md]
                                    [--note TEXT]
  --quick  smaller sizes, shorter durations: about 5 minutes instead of about 20.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "benchmarks.md"
POSTGRES = os.environ.get("CERTIFIER_TEST_POSTGRES_URL",
                          "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
SCALES = ("1x", "10x", "100x")


class ParseError(ValueError):
    """A benchmark printed something this script cannot read its figures from."""


# -- what a benchmark is, and what one run of it gave -------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One number read from a benchmark's table, with what it is compared to."""

    name: str
    value: float
    unit: str
    reference: str = ""  # what the value is measured against, in words
    ratio: float | None = None  # value / reference (or / target where there is no reference)
    target: str = ""
    met: bool | None = None
    scale: str = ""  # set when one invocation measures several sizes (promotion_eval)
    growth: bool = True  # shown in the growth table


@dataclass(frozen=True)
class Invocation:
    scale: str  # "1x", "10x", "100x"; "" for a benchmark measured at one size
    size: str  # the size in words: "120 components"
    args: tuple[str, ...]


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    measures: str
    invocations: Callable[[bool], list[Invocation]]  # quick -> what to run
    parse: Callable[[str], list[Figure]]
    title: str  # how the line that starts its table begins: what comes before is progress
    skip: Callable[[], str | None] = lambda: None  # why it cannot run here, or None
    target_scale: str = ""  # where the target is stated; "" = every scale
    timeout_s: int = 1200


@dataclass
class Outcome:
    benchmark: Benchmark
    invocation: Invocation
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    returncode: int | None = None
    reason: str = ""
    table: str = ""
    figures: list[Figure] = field(default_factory=list)


# -- running -----------------------------------------------------------------------------------


def run(bench: Benchmark, invocation: Invocation, python: str = sys.executable) -> Outcome:
    """Run one invocation as a subprocess and read its figures; never raises for its failure."""
    reason = bench.skip()
    if reason:
        return Outcome(bench, invocation, "skipped", reason=reason)
    started = time.monotonic()
    try:
        done = subprocess.run([python, str(ROOT / "benchmarks" / bench.script), *invocation.args],
                              cwd=ROOT, capture_output=True, text=True, timeout=bench.timeout_s,
                              check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return Outcome(bench, invocation, "failed", time.monotonic() - started,
                       reason=f"timed out after {bench.timeout_s} s")
    outcome = Outcome(bench, invocation, "ok", time.monotonic() - started, done.returncode,
                      table=table_part(done.stdout, bench.title))
    try:
        outcome.figures = [f if f.scale else replace(f, scale=invocation.scale)
                           for f in bench.parse(done.stdout)]
    except (ParseError, ValueError, KeyError, IndexError) as exc:
        outcome.figures = []
        outcome.reason = f"its output could not be read ({exc})"
    if not outcome.figures:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-6:]
        outcome.status = "failed"
        outcome.reason = "; ".join(filter(None, [
            f"exit status {done.returncode}", outcome.reason, " / ".join(tail)]))
    elif done.returncode != 0:
        outcome.reason = f"exit status {done.returncode} (a target was missed)"
    return outcome


def table_part(stdout: str, title: str) -> str:
    """What a benchmark prints from its table's title line on, without the progress before it
    ("seeded …", "round 1 …", a worker's shutdown message); all of it if the title is missing."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(title)), 0)
    return "\n".join(lines[start:]).strip("\n")


# -- reading tables ----------------------------------------------------------------------------


def number(text: str) -> float:
    """The first number in ``text``: ``"< 200"`` is 200, ``"4,044"`` is 4044."""
    found = re.search(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+", text)
    if found is None:
        raise ParseError(f"no number in {text!r}")
    return float(found.group().replace(",", ""))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``text``, as rows keyed by the header's cells."""
    tables: list[list[dict[str, str]]] = []
    lines = text.splitlines()
    i = 0
    while i + 1 < len(lines):
        header, rule = lines[i], lines[i + 1]
        if header.startswith("|") and re.fullmatch(r"\|[\s:|-]+\|?", rule.strip()):
            keys = _cells(header)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(keys, _cells(lines[i]), strict=False)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def first_table(text: str) -> list[dict[str, str]]:
    tables = markdown_tables(text)
    if not tables or not tables[0]:
        raise ParseError("no table printed")
    return tables[0]


def ratio_or_none(value: float, reference: float) -> float | None:
    return value / reference if reference else None


# -- one parser per benchmark: the figures that matter in its table ---------------------------


def parse_promotion_eval(out: str) -> list[Figure]:
    rows = first_table(out)
    smallest = min(number(r["candidates"]) for r in rows)
    target = re.findall(r"target: (\w+) pass over (\d+) soaking candidates < ([\d.]+) s", out)
    limits = {(backend, int(n)): float(s) for backend, n, s in target}
    figures = []
    for r in rows:
        n, backend = number(r["candidates"]), r["backend"]
        scale = f"{n / smallest:g}x"
        ms, decide, ratio = (number(r[k]) for k in ("pass ms", "decide() ms", "ratio pass/decide"))
        limit = limits.get((backend, int(n)))
        figures += [
            Figure(f"reconcile pass, {backend}", ms, "ms", f"decide() alone {decide:.2f} ms",
                   ratio, f"< {limit:g} s" if limit else "",
                   ms / 1000 < limit if limit else None, scale),
        ]
        if backend == rows[0]["backend"]:  # the same on every backend: shown once
            figures += [Figure("SQL statements per pass", number(r["statements"]), "",
                               scale=scale),
                        Figure("decide() over the same candidates", decide, "ms", scale=scale)]
    return figures


def parse_api_manifest(out: str) -> list[Figure]:
    rows = {(r["server"], r["answer"]): r for r in first_table(out)}
    figures = []
    for answer, target in (("200", 0.8), ("304", None)):
        ours, bare = rows[("certifier", answer)], rows[("bare starlette", answer)]
        rps, bare_rps = number(ours["requests/s"]), number(bare["requests/s"])
        ratio = ratio_or_none(rps, bare_rps)
        figures.append(Figure(
            f"GET /api/v1/manifest {answer}{' (If-None-Match)' if answer == '304' else ''}",
            rps, "req/s", f"bare Starlette {bare_rps:,.0f} req/s", ratio,
            f"ratio >= {target}" if target else "",
            ratio >= target if target and ratio is not None else None))
    figures.append(Figure("p99 latency, 200", number(rows[("certifier", "200")]["p99 ms"]), "ms",
                          f"bare {number(rows[('bare starlette', '200')]['p99 ms']):.1f} ms"))
    return figures


def parse_dashboard_scale(out: str) -> list[Figure]:
    figures = []
    for r in first_table(out):
        median, limit = number(r["median ms"]), number(r["target ms"])
        figures.append(Figure(f"{r['page']} (median)", median, "ms", "its target",
                              median / limit, f"< {limit:g} ms", median < limit))
    return figures


def parse_dashboard_serving(out: str) -> list[Figure]:
    rows = {r["measurement"]: r for r in first_table(out)}

    def rps(name: str) -> float:
        return number(rows[name]["requests/s"])

    def p99(name: str) -> float:
        return number(rows[name]["p99 ms"])

    page, alone = rps("GET / alone"), rps("manifest alone, certifier")
    figures = [Figure("GET / at 16 connections", page, "req/s", "its target", page / 1000,
                      ">= 1,000 req/s", page >= 1000),
               Figure("manifest alone", alone, "req/s",
                      f"bare Starlette {rps('manifest alone, bare starlette'):,.0f}, raw ASGI "
                      f"{rps('manifest alone, raw asgi'):,.0f} req/s",
                      alone / rps("manifest alone, bare starlette"))]
    for label, name, target in (
            ("watched by 8 browsers", "manifest while watched, certifier", True),
            ("8 connections on GET / flat out", "manifest while GET / flat out, certifier",
             False)):
        ratio, slower = rps(name) / alone, p99(name) / p99("manifest alone, certifier")
        figures += [
            Figure(f"manifest while {label}", rps(name), "req/s", f"alone {alone:,.0f} req/s",
                   ratio, ">= 0.8x alone" if target else "", ratio >= 0.8 if target else None),
            Figure(f"manifest p99 while {label}", p99(name), "ms",
                   f"alone {p99('manifest alone, certifier'):.1f} ms", slower,
                   "<= 2x alone" if target else "", slower <= 2 if target else None)]
    return figures


_INGEST = re.compile(r"^(certifier /api/v1/webhooks/github|bare: store the body)\s+([\d.]+)\s+"
                     r"([\d.]+|nan)\s+([\d.]+|nan)\s+(\d+)\s+([\d.]+)\s*$", re.MULTILINE)


def parse_webhook_ingest(out: str) -> list[Figure]:
    rows = {m.group(1).split()[0].rstrip(":"): m.groups() for m in _INGEST.finditer(out)}
    if set(rows) != {"certifier", "bare"}:
        raise ParseError("the two endpoint rows are missing")
    ours, bare = rows["certifier"], rows["bare"]
    return [
        Figure("deliveries accepted", float(ours[1]), "/s",
               f"bare INSERT endpoint {float(bare[1]):.0f}/s", float(ours[5])),
        Figure("p50 latency", float(ours[2]), "ms", f"bare {float(bare[2]):.1f} ms",
               ratio_or_none(float(ours[2]), float(bare[2]))),
    ]


def parse_webhook_latency(out: str) -> list[Figure]:
    found = {m.group(1): m for m in re.finditer(
        r"^(p50|p99)\s+([\d.]+)(?:\s+< ([\d.]+)\s+(yes|no))?", out, re.MULTILINE)}
    if "p50" not in found:
        raise ParseError("no p50 row")
    p50 = found["p50"]
    limit = float(p50.group(3)) if p50.group(3) else 1.0
    figures = [Figure("push to run started, p50", float(p50.group(2)), "s", "its target",
                      float(p50.group(2)) / limit, f"< {limit:g} s", p50.group(4) == "yes")]
    if "p99" in found:
        figures.append(Figure("push to run started, p99", float(found["p99"].group(2)), "s"))
    return figures


def parse_testbed_bench(out: str) -> list[Figure]:
    lines = [ln for ln in out.splitlines() if ln.count(" | ") == 5]
    if not lines or not lines[0].startswith("benchmark"):
        raise ParseError("no result table")
    figures = []
    for line in lines[1:]:
        name, measured, value, target, over_target, met = _cells(line)
        if "iperf3" in name:  # "suite / bare" Gbit/s: the suite's figure against bare iperf3's
            suite, bare = (number(x) for x in measured.split("/"))
            figures.append(Figure("bandwidth suite (median)", suite, "Gbit/s",
                                  f"bare iperf3 {bare:.2f} Gbit/s", number(value),
                                  f"ratio {target}", met.lower() == "yes"))
        else:
            figures.append(Figure(name, number(value), "s", "its target", number(over_target),
                                  target, met.lower() == "yes"))
    return figures


_TARGET_LINE = re.compile(r"^\s+(\w+)\s+\[[^\]]+\] (.+?): (MET|MISSED by \S+|not measured)"
                          r"(?: \(([^)]*)\))?$")


def _parse_targets(out: str, marker: str) -> list[Figure]:
    """The target lines after ``marker`` (up to the first blank line), with their verdicts."""
    _, _, section = out.partition(marker)
    figures = []
    for line in section.splitlines()[1:]:
        if not line.strip():
            break  # the required targets end at the first blank line
        m = _TARGET_LINE.match(line)
        if m is None:
            raise ParseError(f"unreadable target line {line.strip()!r}")
        scenario, text, verdict, shown = m.groups()
        shown = shown or ""
        unit = "runs" if "runs" in shown else "x" if shown.endswith(" x") else "%"
        figures.append(Figure(f"{scenario}: {text.split(' >= ')[0].split(' <= ')[0]}",
                              number(shown) if shown else float("nan"), unit, target=text,
                              met=verdict == "MET" if verdict != "not measured" else None,
                              growth=False))
    if not figures:
        raise ParseError("no targets printed")
    return figures


def parse_detector_accuracy(out: str) -> list[Figure]:
    return _parse_targets(out, "Targets (issue 5")


def parse_ab_accuracy(out: str) -> list[Figure]:
    return _parse_targets(out, "Targets (issue 12")


def parse_noise_harness(out: str) -> list[Figure]:
    return _parse_targets(out, "Targets (issue 12, noise harness)")


# -- the benchmarks and their sizes ------------------------------------------------------------


def _missing(*binaries: str) -> str | None:
    absent = [b for b in binaries if shutil.which(b) is None]
    return f"{', '.join(absent)} not installed (apt-get install {' '.join(absent)})" \
        if absent else None


def _reachable(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"{parts.scheme} at {host}:{port} is not reachable ({exc.strerror or exc})"
    return None


def needs_postgres() -> str | None:
    return _reachable(POSTGRES, 5432)


def needs_postgres_redis_wrk() -> str | None:
    return _missing("wrk") or needs_postgres() or _reachable(REDIS, 6379)


def needs_postgres_redis() -> str | None:
    return needs_postgres() or _reachable(REDIS, 6379)


def needs_root_and_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    return _missing("ip", "iperf3", "fio", "mkfs.ext4")


def needs_root_tools_stress_nft() -> str | None:
    return needs_root_and_tools() or _missing("stress-ng", "nft")


def sized(option: str, sizes: Iterable[int], unit: str, *common: str) -> list[Invocation]:
    """One invocation per scale, ``option`` set to each size."""
    return [Invocation(scale, f"{size:,} {unit}", (*common, option, str(size)))
            for scale, size in zip(SCALES, sizes, strict=True)]


def one(*args: str) -> list[Invocation]:
    return [Invocation("", "", args)]


BENCHMARKS = [
    Benchmark(
        "promotion_eval", "promotion_eval.py",
        "one scheduler reconcile pass over N soaking candidates (PostgreSQL and SQLite) beside "
        "promotion.decide() over the same runs in memory; N = 10, 100, 1,000",
        lambda quick: [Invocation("", "1x = 10, 10x = 100, 100x = 1,000 soaking candidates",
                                  ("--sizes", "10,100,1000", "--passes", "3" if quick else "7"))],
        parse_promotion_eval, "One reconcile pass", needs_postgres, target_scale="100x"),
    Benchmark(
        "api_manifest", "api_manifest.py",
        "GET /api/v1/manifest under wrk beside a bare Starlette app serving the same bytes; "
        "size: components in the manifest",
        lambda quick: sized("--components", (12, 120, 1200), "components",
                            "--duration", "2" if quick else "10"),
        parse_api_manifest, "GET /api/v1/manifest,", lambda: _missing("wrk"), target_scale="1x"),
    Benchmark(
        "dashboard_serving", "dashboard_serving.py",
        "GET / on a demo-sized database, and the manifest alone, while 8 browsers watch the "
        "dashboard and while 8 connections request GET / flat out; beside bare Starlette and "
        "raw ASGI serving the same bytes, interleaved rounds",
        lambda quick: one("--duration", "3" if quick else "8", "--rounds", "2" if quick else "5"),
        parse_dashboard_serving, "Dashboard serving:", lambda: _missing("wrk")),
    Benchmark(
        "webhook_ingest", "webhook_ingest.py",
        "signed GitHub pushes stored and queued per second beside a bare store-the-body "
        "endpoint; size: deliveries already stored",
        lambda quick: sized("--stored", (1_000, 10_000, 100_000), "stored deliveries",
                            *(("--duration", "3", "--rounds", "1") if quick
                              else ("--duration", "10", "--rounds", "2"))),
        parse_webhook_ingest, "webhook ingestion,", needs_postgres_redis_wrk),
    Benchmark(
        "webhook_latency", "webhook_latency.py",
        "push to run started through uvicorn, a Celery worker on Redis and the reconcile pass "
        "(not sized: the path reads a bounded set of rows; promotion_eval grows the pass)",
        lambda quick: one("--pushes", "15" if quick else "40"),
        parse_webhook_latency, "push to run started,", needs_postgres_redis),
    Benchmark(
        "dashboard_scale", "dashboard_scale.py",
        "dashboard pages and /metrics on PostgreSQL; size: candidates (10 runs and 100 "
        "measurements each)",
        lambda quick: sized("--candidates", (100, 1_000, 10_000), "candidates",
                            "--requests", "5" if quick else "21"),
        parse_dashboard_scale, "PostgreSQL,", needs_postgres, target_scale="100x"),
    Benchmark(
        "detector_accuracy", "detector_accuracy.py",
        "the regression detector on seeded generated series (accuracy: not sized)",
        lambda quick: one("--quick") if quick else one(),
        parse_detector_accuracy, "detector ("),
    Benchmark(
        "ab_accuracy", "ab_accuracy.py",
        "A/B judgement (gate and soak against contemporaneous controls) on seeded generated "
        "candidates of 50 series, beside the history-only detector (accuracy: not sized)",
        lambda quick: one("--quick") if quick else one("--candidates", "1000", "--old", "60"),
        parse_ab_accuracy, "ab accuracy (", timeout_s=2400),
    Benchmark(
        "testbed_bench", "testbed_bench.py",
        "bandwidth suite beside bare iperf3, small-cloud setup + teardown, a full gate run "
        "(not sized: one fixed topology)",
        lambda quick: one("--rounds", "1", "--setups", "3", "--gates", "1", "--duration", "2")
        if quick else one(),
        parse_testbed_bench, "benchmark ", needs_root_and_tools),
    Benchmark(
        "noise_harness", "noise_harness.py",
        "harmless commits and six real breakages on real netns runs of a world of its own, "
        "with the host loaded by stress-ng (CPU and IO) at 0, 1 and 2 workers (not sized: "
        "candidates per level, 3 quick, 30 full)",
        lambda quick: one("--quick") if quick else one(),
        parse_noise_harness, "noise harness (", needs_root_tools_stress_nft, timeout_s=12 * 3600),
]


# -- the document ------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    digits = 0 if abs(value) >= 100 or value.is_integer() else 1 if abs(value) >= 10 \
        else 2 if abs(value) >= 0.1 else 3
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip() if unit and unit not in ("%", "/s") else text + unit


def _met(figure: Figure) -> str:
    return {True: "met", False: "**missed**", None: "-"}[figure.met]


def machine() -> dict[str, str]:
    """Cores, RAM, kernel and Python of this machine."""
    ram, cpu = "unknown", platform.machine()
    with contextlib.suppress(OSError, IndexError, ParseError):
        meminfo = Path("/proc/meminfo").read_text()
        ram = f"{number(meminfo.split('MemTotal:')[1].splitlines()[0]) / 1024 / 1024:.1f} GiB"
    with contextlib.suppress(OSError, IndexError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        cpu = cpuinfo.split("model name")[1].split(":", 1)[1].splitlines()[0].strip()
    return {"CPU": cpu, "CPU cores": str(os.cpu_count()), "RAM": ram,
            "kernel": f"{platform.system()} {platform.release()}",
            "Python": platform.python_version()}


def render(outcomes: list[Outcome], *, when: datetime, mode: str, seconds: float,
           note: str, facts: dict[str, str]) -> str:
    """docs/benchmarks.md from the outcomes of one run."""
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python benchmarks/run_all.py{' --quick' if mode == 'quick' else ''}` on "
        f"{when:%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} min ({mode} sizes). {note} Compare "
        "a ratio with its reference measured in the same run, not absolute figures across runs "
        "or machines. Regenerate this file with the same command; what each benchmark measures "
        "is in [benchmarks/README.md](../benchmarks/README.md).",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        "",
        "## Summary",
        "",
        "| benchmark | status | runs | time | targets met |",
        "|---|---|---:|---:|---|",
    ]
    by_bench: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_bench.setdefault(o.benchmark.name, []).append(o)
    for name, runs in by_bench.items():
        lines.append(_summary_row(name, runs))
    lines += ["", "## Targets", "",
              "At the size each target is stated for (the dashboard's and the promotion pass's at "
              "100x, the manifest's at 1x).", "",
              "| benchmark | scale | figure | value | target | |", "|---|---|---|---:|---|---|"]
    for o in outcomes:
        for f in o.figures:
            if f.target and f.met is not None and _at_target_scale(o.benchmark, f):
                lines.append(f"| {o.benchmark.name} | {f.scale or '-'} | {f.name} | "
                             f"{fmt(f.value, f.unit)} | {f.target} | {_met(f)} |")
    lines += ["", *growth_section(outcomes), "", "## Each benchmark", ""]
    for name, runs in by_bench.items():
        lines += benchmark_section(name, runs)
    return "\n".join(lines).rstrip() + "\n"


def _at_target_scale(bench: Benchmark, figure: Figure) -> bool:
    return not bench.target_scale or not figure.scale or figure.scale == bench.target_scale


def _summary_row(name: str, runs: list[Outcome]) -> str:
    counts = {s: sum(o.status == s for o in runs) for s in ("ok", "failed", "skipped")}
    status = ", ".join(f"{n} {'**failed**' if s == 'failed' else s}"
                       for s, n in counts.items() if n)
    if len(runs) == 1 or counts["ok"] == 0:
        status = status.partition(" ")[2]  # "ok" rather than "1 ok"
    if counts["skipped"]:
        status += f": {runs[0].reason}"
    judged = [f for o in runs for f in o.figures
              if f.met is not None and _at_target_scale(o.benchmark, f)]
    met = sum(1 for f in judged if f.met)
    targets = f"{met} of {len(judged)}" if judged else "-"
    took = sum(o.seconds for o in runs)
    return (f"| [{name}](#{name}) | {status} | {len(runs)} | {took:.0f} s "
            f"| {targets} |")


def growth_section(outcomes: list[Outcome]) -> list[str]:
    """The growth table: each sized figure at 1x, 10x, 100x, and how much it grew."""
    rows: dict[tuple[str, str, str], dict[str, float]] = {}
    sizes: dict[str, list[str]] = {}
    for o in outcomes:
        if o.invocation.size:
            sizes.setdefault(o.benchmark.name, []).append(
                f"{o.invocation.scale} = {o.invocation.size}" if o.invocation.scale
                else o.invocation.size)
        for f in o.figures:
            if f.growth and f.scale:
                rows.setdefault((o.benchmark.name, f.name, f.unit), {})[f.scale] = f.value
    lines = ["## Growth", "",
             "The same benchmark at 1x, 10x and 100x data. The last column is the 100x figure "
             "over the 1x one: about 100 means linear in the data, about 1 means flat.", ""]
    for name in dict.fromkeys(k[0] for k in rows):
        if name in sizes:
            lines.append(f"- {name}: {', '.join(sizes[name])}")
    lines += ["", "| benchmark | figure | 1x | 10x | 100x | 100x / 1x |",
              "|---|---|---:|---:|---:|---:|"]
    for (name, figure, unit), values in rows.items():
        if len(values) < 2:
            continue
        first, last = values.get("1x"), values.get("100x")
        grew = fmt(last / first) if first and last is not None else "-"
        cells = " | ".join(fmt(values.get(s), unit) for s in SCALES)
        lines.append(f"| {name} | {figure} | {cells} | {grew} |")
    return lines


def benchmark_section(name: str, runs: list[Outcome]) -> list[str]:
    bench = runs[0].benchmark
    lines = [f"### {name}", "", f"`benchmarks/{bench.script}`: {bench.measures}.", ""]
    figures = [(o, f) for o in runs for f in o.figures]
    if figures:
        lines += ["| scale | figure | value | reference | ratio | target | |",
                  "|---|---|---:|---|---:|---|---|"]
        for _, f in figures:
            lines.append(f"| {f.scale or '-'} | {f.name} | {fmt(f.value, f.unit)} | "
                         f"{f.reference or '-'} | {fmt(f.ratio)} | {f.target or '-'} | "
                         f"{_met(f)} |")
        lines.append("")
    for o in runs:
        size = f" ({o.invocation.size})" if o.invocation.size else ""
        command = " ".join(["python", f"benchmarks/{bench.script}", *o.invocation.args])
        lines.append(f"**{o.invocation.scale or 'Run'}**{size}: `{command}`"
                     + (f", {o.seconds:.0f} s" if o.seconds else ""))
        lines.append("")
        if o.status != "ok" or o.reason:
            lines += [f"{o.status.upper() if o.status != 'ok' else 'Note'}: {o.reason}", ""]
        if o.table:
            lines += [*as_markdown(o.table), ""]
    return lines


def as_markdown(table: str) -> list[str]:
    """A benchmark's printed table: markdown stays markdown, anything else goes in a fence."""
    if any(line.startswith("|") for line in table.splitlines()):
        return table.splitlines()
    return ["```text", *table.splitlines(), "```"]


# -- the command -------------------------------------------------------------------------------


def select(names: str | None) -> list[Benchmark]:
    if not names:
        return BENCHMARKS
    wanted = [n.strip().removesuffix(".py") for n in names.split(",") if n.strip()]
    known = {b.name: b for b in BENCHMARKS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"run_all: unknown benchmark {', '.join(unknown)}; "
                         f"known: {', '.join(known)}")
    return [known[n] for n in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 5 minutes)")
    parser.add_argument("--only", metavar="NAME,...", help="run only these benchmarks")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the document to write")
    parser.add_argument("--note", default="", help="a sentence for the header, e.g. the load")
    args = parser.parse_args(argv)
    benchmarks = select(args.only)
    started, when = time.monotonic(), datetime.now(UTC)
    load_before = os.getloadavg()[0]
    outcomes = []
    for bench in benchmarks:
        for invocation in bench.invocations(args.quick):
            label = " ".join(filter(None, [bench.name, invocation.scale]))
            print(f"run_all: {label} …", file=sys.stderr, flush=True)
            outcome = run(bench, invocation)
            print(f"run_all: {label}: {outcome.status} in {outcome.seconds:.0f} s"
                  + (f" ({outcome.reason})" if outcome.reason else ""), file=sys.stderr,
                  flush=True)
            outcomes.append(outcome)
    facts = machine()
    facts["load average (1 min)"] = f"{load_before:.1f} at the start, " \
                                    f"{os.getloadavg()[0]:.1f} at the end"
    note = args.note or ("Other work may have run on this machine at the same time (see the "
                         "load average below).")
    document = render(outcomes, when=when, mode="quick" if args.quick else "full",
                      seconds=time.monotonic() - started, note=note, facts=facts)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(document)
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"run_all: wrote {args.output}; {len(failed)} failed, "
          f"{sum(o.status == 'skipped' for o in outcomes)} skipped", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
