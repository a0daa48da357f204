"""Testbed performance: the bandwidth suite beside bare iperf3, topology setup and teardown, and a
full gate run of the suites, printed as a table with targets (issue 3).

Rows
  iperf3 ratio   Certifier's bandwidth suite (one TCP test h1->h2) vs a bare ``iperf3`` between
                 the same two namespaces of the same testbed, interleaved, median of each; the
                 ratio is suite / bare (target >= 0.95).
  setup+teardown the four-host small-cloud topology (examples/topologies/small-cloud.yaml: two
                 networks, a router, a VXLAN overlay), built and torn down; median (target < 2 s).
  gate run       ping, bandwidth and storage with the default (short) options of SuitesConfig on
                 that topology, testbed build and teardown included; median (target < 60 s).
  A/B gate run   the same as an A/B run measures it (issue 12): the candidate's testbed and a twin
                 control testbed built at once, the suites on both in rounds of alternating order
                 (ab.min_rounds, 2, then more while the A/B statistics leave a series undecided,
                 of the suites with such a series only, up to ab.max_rounds, 3), each round
                 with its share of the measuring time (the default ab.round_time: split;
                 workers/abrounds.py, as the runner runs them),
                 both torn down; the row names the rounds each run took; a round past the
                 minimum is asked for with the earlier A/B runs' noise history, as the runner
                 asks with the testbed's;
                 median, interleaved with the gate runs (target: at most 2.5 x the gate run's).
                 Deploy hooks are left out of both, as a recipe's cost is not Certifier's.

Needs root, iproute2, iperf3 and fio. Usage:
  python benchmarks/testbed_bench.py [--rounds 5] [--setups 7] [--gates 3] [--duration 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from certifier.domain.abtest import ABPolicy, NoiseHistory, paired_series, undecided_suites
from certifier.domain.results import Measurement, Side, SuiteResult
from certifier.settings import AbConfig, SuitesConfig
from certifier.topology import load as load_topology
from workers import abrounds
from workers.suites import SUITES, bandwidth
from workers.testbed.base import Testbed, TestbedSpec
from workers.testbed.factory import create_testbed

ROOT = Path(__file__).resolve().parents[1]
SMALL_CLOUD = ROOT / "examples" / "topologies" / "small-cloud.yaml"
RUN = secrets.token_hex(3)  # in every tag: a crashed earlier run cannot be in the way
AB_ROUNDS: list[int] = []  # rounds each A/B gate run measured
AB_NOTES: list[str] = []  # what the rounds past the minimum measured, as the run log says it
AB_HISTORY: list[list[Measurement]] = []  # earlier A/B gate runs: the testbed's noise history


def _bare_iperf3(bed: Testbed, seconds: int, port: int) -> float:
    """Gbit/s from a plain iperf3 client and one-off server, as a person would run them."""
    server_ns, client_ns = bed.host("h2").namespace, bed.host("h1").namespace
    assert server_ns and client_ns
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not subprocess.run(["ss", "-N", server_ns, "-tlnH", "sport", "=", f":{port}"],
                                 capture_output=True, text=True, timeout=5).stdout.strip():
            if time.monotonic() > deadline:
                raise RuntimeError("bare iperf3 server did not listen")
            time.sleep(0.01)
        out = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c",
                              bed.host("h2").address, "-p", str(port), "-J", "-t",
                              str(seconds)], capture_output=True, text=True, timeout=seconds + 30)
        start = out.stdout.find("{")
        if start < 0:
            raise RuntimeError(f"bare iperf3 printed no JSON (exit {out.returncode}): "
                               f"{out.stderr.strip()[:300]}")
        report = json.loads(out.stdout[start:])
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        server.wait(timeout=10)


def _suite_iperf3(bed: Testbed, seconds: int) -> float:
    options = bandwidth.BandwidthOptions(duration_s=seconds, reverse=False, parallel_streams=0,
                                         udp_rate_mbit=0)
    result = bandwidth.run(bed, options)
    if result.infra_error:
        raise RuntimeError(result.infra_error)
    return next(m.value for m in result.measurements if m.metric == "throughput_gbps")


def iperf3_ratio(work: Path, rounds: int, seconds: int) -> tuple[float, float, float]:
    spec = TestbedSpec(name="bench", subnet="198.19.200.0/24")
    suite: list[float] = []
    bare: list[float] = []
    with create_testbed(spec, tag=f"bi{RUN}", state_dir=work / "iperf",
                        records_dir=work / "records") as bed:
        for i in range(rounds):  # interleaved, alternating who goes first
            first, second = (_suite_iperf3, _bare_iperf3) if i % 2 == 0 else (
                _bare_iperf3, _suite_iperf3)
            for measure in (first, second):
                if measure is _suite_iperf3:
                    suite.append(_suite_iperf3(bed, seconds))
                else:
                    bare.append(_bare_iperf3(bed, seconds, 5900 + i))
            print(f"  round {i + 1}: suite {suite[-1]:.2f} Gbit/s, bare {bare[-1]:.2f} Gbit/s",
                  flush=True)
    suite_median, bare_median = statistics.median(suite), statistics.median(bare)
    return suite_median, bare_median, suite_median / bare_median


def _timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def setup_teardown(work: Path, count: int) -> list[float]:
    spec = TestbedSpec(name="bench", topology=load_topology(SMALL_CLOUD))
    times = []
    for i in range(count):
        def cycle(i: int = i) -> None:
            bed = create_testbed(spec, tag=f"bs{RUN}{i}", state_dir=work / f"st{i}",
                                 records_dir=work / "records")
            bed.teardown()
        times.append(_timed(cycle))
        print(f"  setup+teardown {i + 1}: {times[-1]:.3f} s", flush=True)
    return times


def _suite(bed: Testbed, name: str, share: int = 1) -> SuiteResult:
    config = SuitesConfig()
    run_suite, options_cls = SUITES[name]
    options = options_cls(**getattr(config, name).model_dump())
    result = run_suite(bed, abrounds.round_options(name, options, share))
    if result.infra_error:
        raise RuntimeError(f"{name}: {result.infra_error}")
    failed = [c.name for c in result.checks if not c.passed]
    if failed:
        raise RuntimeError(f"{name}: failed checks {failed}")
    return result


def _gate(work: Path, i: int) -> None:
    spec = TestbedSpec(name="bench", topology=load_topology(SMALL_CLOUD))
    with create_testbed(spec, tag=f"bg{RUN}{i}", state_dir=work / f"gate{i}",
                        records_dir=work / "records") as bed:
        for name in SuitesConfig().enabled:
            _suite(bed, name)


def _more_rounds(measurements: list[Measurement], rounds_done: int) -> frozenset[str]:
    """As the runner asks: with the noise history of the earlier A/B runs on this testbed (none
    before the first, as on a new testbed)."""
    ab = AbConfig()
    policy = ABPolicy(min_rounds=ab.min_rounds, max_rounds=ab.max_rounds)
    noise = NoiseHistory.from_runs(paired_series(ms) for ms in AB_HISTORY)
    return undecided_suites(measurements, policy, noise)


def _ab_gate(work: Path, i: int) -> int:
    spec = TestbedSpec(name="bench", topology=load_topology(SMALL_CLOUD))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(create_testbed, spec, tag=f"b{side}{RUN}{i}",
                               state_dir=work / f"ab{side}{i}", records_dir=work / "records")
                   for side in ("a", "c")]
        beds = [f.result() for f in futures]
    try:
        sides = {Side.CANDIDATE: beds[0], Side.CONTROL: beds[1]}
        rounds = abrounds.rounds_for(AbConfig(), "gate", _more_rounds)
        results, done = abrounds.measure(
            SuitesConfig().enabled, lambda name, side: _suite(sides[side], name, rounds.share),
            rounds, _keep_round_notes)
        AB_HISTORY.append([m for r in results for m in r.measurements])
    finally:
        for bed in beds:
            bed.teardown()
    return done


def _keep_round_notes(text: str) -> None:
    if text.startswith("A/B: round"):
        AB_NOTES.append(text)


def _timed_rounds(run: Callable[[Path, int], int | None], work: Path, i: int) -> float:
    started = time.perf_counter()
    done = run(work, i)
    if done is not None:
        AB_ROUNDS.append(done)
    return time.perf_counter() - started


def gate_runs(work: Path, count: int) -> tuple[list[float], list[float]]:
    """Single-sided and A/B gate runs, interleaved (which goes first alternates)."""
    single: list[float] = []
    ab: list[float] = []
    for i in range(count):
        order = ((single, _gate), (ab, _ab_gate)) if i % 2 == 0 else ((ab, _ab_gate),
                                                                      (single, _gate))
        for times, run in order:
            times.append(_timed_rounds(run, work, i))
        print(f"  gate run {i + 1}: {single[-1]:.1f} s; A/B gate run {i + 1}: {ab[-1]:.1f} s",
              flush=True)
    return single, ab


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="iperf3 rounds (each: both)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per iperf3 test")
    parser.add_argument("--setups", type=int, default=7, help="setup+teardown cycles")
    parser.add_argument("--gates", type=int, default=3, help="full gate runs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="testbed-bench-") as tmp:
        work = Path(tmp)
        print("iperf3: bandwidth suite vs bare iperf3 (h1->h2, same testbed)", flush=True)
        suite, bare, ratio = iperf3_ratio(work, args.rounds, args.duration)
        print("setup + teardown of small-cloud", flush=True)
        cycles = setup_teardown(work, args.setups)
        print("full gate run (ping, bandwidth, storage; default options) on small-cloud, "
              "single-sided and A/B", flush=True)
        gates, ab_gates = gate_runs(work, args.gates)
    setup_median, gate_median = statistics.median(cycles), statistics.median(gates)
    ab_median = statistics.median(ab_gates)
    ab_ratio = ab_median / gate_median
    rows = [
        ("iperf3: suite / bare (median Gbit/s)", f"{suite:.2f} / {bare:.2f}", f"{ratio:.3f}",
         ">= 0.95", f"{ratio / 0.95:.2f}", ratio >= 0.95),
        (f"setup+teardown small-cloud (median of {len(cycles)})", f"{setup_median:.3f} s",
         f"{setup_median:.3f}", "< 2 s", f"{setup_median / 2:.2f}", setup_median < 2),
        (f"gate run small-cloud (median of {len(gates)})", f"{gate_median:.1f} s",
         f"{gate_median:.1f}", "< 60 s", f"{gate_median / 60:.2f}", gate_median < 60),
        (f"A/B gate run small-cloud, rounds {'/'.join(map(str, AB_ROUNDS))} (median of "
         f"{len(ab_gates)})",
         f"{ab_median:.1f} s = {ab_ratio:.2f} x gate run", f"{ab_median:.1f}",
         "<= 2.5 x gate run", f"{ab_ratio / 2.5:.2f}", ab_ratio <= 2.5),
    ]
    header = ("benchmark", "measured", "value", "target", "value/target", "met")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    widths[-1] = max(widths[-1], 3)
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(f"\n{line}\n{'-+-'.join('-' * w for w in widths)}")
    for row in rows:
        cells = [*map(str, row[:-1]), "yes" if row[-1] else "NO"]
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"setup+teardown times {', '.join(f'{t:.2f}' for t in cycles)} s; "
          f"gate runs {', '.join(f'{t:.1f}' for t in gates)} s; "
          f"A/B gate runs {', '.join(f'{t:.1f}' for t in ab_gates)} s")
    for text in sorted(set(AB_NOTES)):
        print(f"{AB_NOTES.count(text)} x {text}")
    return 0 if all(row[-1] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
