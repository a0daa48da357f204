"""Webhook ingestion: deliveries per second accepted and stored, beside a bare store-the-body app.

Real stack: uvicorn (one process, httptools) serving Certifier's API on PostgreSQL with the Redis
broker; ``wrk`` posts one signed GitHub push with a new ``X-GitHub-Delivery`` on every request,
so each one is verified (HMAC over the raw body), parsed, deduplicated, matched to a tracked
component, stored, committed and its processing task published to Redis before the 202. The
baseline is ``POST /bench/bare`` in the same uvicorn on the same database: one INSERT of the
body, one commit. The ratio is Certifier's deliveries/s over the baseline's.

Usage: python benchmarks/webhook_ingest.py [--duration 10] [--connections 16] [--rounds 2]
                                           [--stored 0]
  --stored is the size: that many earlier, processed deliveries are in the table before the
  measurement (inserted in one statement), so the deduplicating insert meets a grown index.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import redis
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.webhook_common import (
    REDIS,
    REPO,
    SECRET,
    api_server,
    push,
    scratch_database,
    sha,
)
from certifier.db.session import make_engine
from certifier.tracking.webhooks import github_signature

LUA = """
local n = 0
local tid = 0
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  tid = tonumber(wrk.thread:get("tid")) or 0
end
request = function()
  n = n + 1
  wrk.headers["X-GitHub-Delivery"] = string.format("bench-%d-%d-%d", RUN, tid, n)
  return wrk.format("POST", PATH, nil, BODY)
end
"""


def wrk(url: str, path: str, body: bytes, headers: dict[str, str], duration: int,
        connections: int, run: int, folder: Path) -> dict[str, float]:
    (folder / "body.json").write_bytes(body)
    script = folder / f"post{run}.lua"
    quoted = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(f'RUN = {run}\nPATH = "{path}"\nBODY = "{quoted}"\n' + LUA)
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True,
                         timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    found = {q: re.search(rf"{q}%\s+([\d.]+)(us|ms|s)\b", out) for q in ("50", "99")}
    lat = {q: float(m.group(1)) * scale[m.group(2)] if m else float("nan")
           for q, m in found.items()}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"],
            "errors": float(non2xx.group(1)) if non2xx else 0.0}


def preload(url: str, count: int) -> None:
    """``count`` earlier deliveries of the tracked component, processed long ago."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO deliveries (source, event, dedup_key, received_at, state, outcome, "
            "project, ref, component_id, headers, body, attempts, replays, processed_at) "
            "SELECT 'github', 'push', 'x-github-delivery:earlier-' || g, "
            "now() - g * interval '1 minute', 'processed', 'new head', :project, "
            "'refs/heads/main', (SELECT id FROM components WHERE name = 'comp'), '{}', :body, "
            "1, 0, now() FROM generate_series(1, :n) AS g"),
            {"project": REPO, "body": push(sha("earlier")).decode(), "n": count})
        connection.execute(text("ANALYZE deliveries"))
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stored", type=int, default=0,
                        help="size: earlier deliveries in the table before measuring")
    args = parser.parse_args()
    if not 0 <= args.stored <= 10_000_000:
        parser.error("--stored must be between 0 and 10000000")
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (`./dev bench` installs it)")
        return 2
    broker = redis.Redis.from_url(REDIS)
    broker.flushdb()
    body = push(sha("bench-head"))
    signed = {"X-Hub-Signature-256": github_signature(SECRET, body), "X-GitHub-Event": "push",
              "Content-Type": "application/json"}
    with tempfile.TemporaryDirectory() as tmp, \
            scratch_database(f"certifier_bench_{os.getpid()}") as url:
        folder = Path(tmp)
        if args.stored:
            preload(url, args.stored)
        with api_server(folder, url) as base:
            wrk(base + "/api/v1/webhooks/github", "/api/v1/webhooks/github", body, signed, 2,
                args.connections, 0, folder)  # warm-up
            wrk(base + "/bench/bare", "/bench/bare", body, {}, 2, args.connections, 0, folder)
            # Interleaved rounds, best of each: other load on the machine hits both alike.
            ours, bare = [], []
            for run in range(1, args.rounds + 1):
                ours.append(wrk(base + "/api/v1/webhooks/github", "/api/v1/webhooks/github",
                                body, signed, args.duration, args.connections, run, folder))
                bare.append(wrk(base + "/bench/bare", "/bench/bare", body, {}, args.duration,
                                args.connections, run, folder))
            rows = [("certifier /api/v1/webhooks/github", max(ours, key=lambda r: r["rps"])),
                    ("bare: store the body", max(bare, key=lambda r: r["rps"]))]
        engine = make_engine(url)
        with engine.connect() as connection:
            stored = connection.execute(text(
                "SELECT count(*) FROM deliveries WHERE dedup_key LIKE 'x-github-delivery:bench-%'"
            )).scalar_one()
        engine.dispose()
    queued = broker.llen("certifier")
    broker.flushdb()
    base_rps = rows[1][1]["rps"]
    print(f"\nwebhook ingestion, {args.connections} connections, {args.duration} s each, "
          f"PostgreSQL + Redis broker, {os.cpu_count()} CPUs, {args.stored} deliveries stored "
          f"before\n")
    print(f"{'endpoint':38} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
          f"{'ratio':>6}")
    for name, r in rows:
        print(f"{name:38} {r['rps']:13.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['errors']:8.0f} {r['rps'] / base_rps:6.2f}")
    print(f"\nstored deliveries (all rounds): {stored}; processing tasks queued in "
          f"Redis: {queued}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
