"""GET /api/v1/manifest under load: Certifier's API beside a bare Starlette app, same bytes.

Both servers run the same way (uvicorn, one process, httptools, no access log) on this machine,
one after the other, and `wrk` (Debian's package) drives each with the same connections and
duration. The bare app is the ceiling: what uvicorn alone can do with these bytes. The ratio is
Certifier's requests per second over the bare app's; the target is >= 0.8. A second pair of rows
sends `If-None-Match` with the manifest's ETag, as an operator's poller does, and expects 304s.

Usage: python benchmarks/api_manifest.py [--duration 10] [--connections 16] [--components 12]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import serving  # noqa: E402
from benchmarks.serving import uvicorn_server  # noqa: E402
from certifier.db import migrate  # noqa: E402
from certifier.db.session import make_engine, make_session_factory, session_scope  # noqa: E402
from certifier.domain.clock import FakeClock  # noqa: E402
from certifier.pipeline import components, knowngood, scheduler  # noqa: E402
from certifier.pipeline.dispatch import NullDispatcher  # noqa: E402
from certifier.settings import ComponentConfig  # noqa: E402


def seed(database_url: str, n_components: int) -> None:
    """A database with one known-good of ``n_components`` components, reached through services."""
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    clock = FakeClock()
    with session_scope(factory) as session:
        for i in range(n_components):
            name = f"component{i:02d}"
            components.create_component(
                session, ComponentConfig(name=name, url=f"https://git.example/{name}.git"), clock)
            sha = hashlib.sha1(name.encode()).hexdigest()  # noqa: S324 - a fake commit id
            components.report_commit(session, name, sha, clock, title=f"{name}: a change",
                                     seen_via="api")
    with session_scope(factory) as session:
        report = scheduler.reconcile(session, clock,
                                     scheduler.SchedulerPolicy(soak=knowngood_soak()),
                                     NullDispatcher())
        cand = session.get(scheduler.models.Candidate, report.formed[0])
        assert cand is not None
        knowngood.promote(session, cand, clock, reason="benchmark")
    engine.dispose()


def knowngood_soak() -> scheduler.SoakPolicy:
    return scheduler.SoakPolicy(duration=timedelta(hours=1))


def server(app: str, env: dict[str, str]) -> AbstractContextManager[str]:
    return uvicorn_server(app, env, probe="/api/v1/manifest")


def wrk(url: str, duration: int, connections: int, etag: str | None) -> dict[str, float]:
    headers = [f"If-None-Match: {etag}"] if etag else []
    return serving.wrk(f"{url}/api/v1/manifest", duration, connections, headers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--components", type=int, default=12)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (`./dev bench` installs it)")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {**os.environ, "CERTIFIER_DATA_DIR": str(data)}
        env.pop("CERTIFIER_DATABASE_URL", None)
        env.pop("CERTIFIER_CONFIG", None)
        seed(f"sqlite:///{data / 'certifier.sqlite'}", args.components)
        rows = []
        with server("benchmarks.api_manifest:certifier_app", env) as url:
            first = httpx.get(f"{url}/api/v1/manifest")
            first.raise_for_status()
            body, etag = first.content, first.headers["etag"]
            (data / "body.json").write_bytes(body)
            (data / "etag").write_text(etag)
            rows.append(("certifier", "200", wrk(url, args.duration, args.connections, None)))
            rows.append(("certifier", "304", wrk(url, args.duration, args.connections, etag)))
        bare_env = {**env, "BENCH_BODY": str(data / "body.json"), "BENCH_ETAG": str(data / "etag")}
        with server("benchmarks.api_manifest:bare_app", bare_env) as url:
            assert httpx.get(f"{url}/api/v1/manifest").content == body
            rows.append(("bare starlette", "200", wrk(url, args.duration, args.connections, None)))
            rows.append(("bare starlette", "304", wrk(url, args.duration, args.connections,
                                                      etag)))
    print(f"\nGET /api/v1/manifest, {len(body)} bytes, {args.components} components; "
          f"wrk 1 thread, {args.connections} connections, {args.duration} s each\n")
    print("| server | answer | requests/s | p99 ms | errors | ratio to bare |")
    print("|---|---|---:|---:|---:|---:|")
    bare = {status: r for name, status, r in rows if name == "bare starlette"}
    for name, status, r in rows:
        ratio = r["rps"] / bare[status]["rps"]
        print(f"| {name} | {status} | {r['rps']:.0f} | {r['p99_ms']:.2f} | {r['errors']:.0f} "
              f"| {ratio:.2f} |")
    ratio = rows[0][2]["rps"] / bare["200"]["rps"]
    print(f"\ntarget: certifier/bare >= 0.8 for 200s: {'met' if ratio >= 0.8 else 'NOT met'} "
          f"({ratio:.2f})")
    return 0


def certifier_app() -> object:
    """The real app, as `certifier serve` builds it, for uvicorn --factory."""
    from certifier.api.app import create_app
    from certifier.settings import load_settings

    return create_app(load_settings(), dispatcher=NullDispatcher())


def bare_app() -> object:
    """The ceiling: Starlette answering with the same bytes and ETag."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    body = Path(os.environ["BENCH_BODY"]).read_bytes()
    etag = Path(os.environ["BENCH_ETAG"]).read_text()

    async def manifest(request: Request) -> Response:
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    return Starlette(routes=[Route("/api/v1/manifest", manifest)])


if __name__ == "__main__":
    sys.exit(main())
