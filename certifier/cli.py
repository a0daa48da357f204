"""The ``certifier`` command: run the service's processes, manage the database, run the demo.

Every command builds the one Settings object from ``CERTIFIER_*`` variables (and ``--config``);
a bad config file prints one clear message and exits with status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from certifier.settings import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Certify known-good combinations of multi-component software.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic migrations).")
manifest_app = typer.Typer(no_args_is_help=True, help="The certified manifest.")
app.add_typer(db_app, name="db")
app.add_typer(manifest_app, name="manifest")

DEMO_MARKER = ".certifier-demo"


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(f"certifier: configuration error\n{exc}", err=True)
        raise typer.Exit(2) from None


@app.callback()
def _global(
    config: Annotated[Path | None, typer.Option(help="YAML config file (CERTIFIER_CONFIG)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (CERTIFIER_DATA_DIR)")] = None,
) -> None:
    if config is not None:
        os.environ["CERTIFIER_CONFIG"] = str(config)
    if data_dir is not None:
        os.environ["CERTIFIER_DATA_DIR"] = str(data_dir)


def _prepare(settings: Settings) -> None:
    """Create the data folder, migrate the database and load the config's components."""
    from certifier.db import migrate
    from certifier.db.session import make_engine, make_session_factory, session_scope
    from certifier.domain.clock import SystemClock
    from certifier.pipeline.components import sync_from_config

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            sync_from_config(session, settings.config.components, settings.config.testbeds,
                             SystemClock())
    finally:
        engine.dispose()


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the REST API and the dashboard."""
    import uvicorn

    from certifier.api.app import create_app
    from workers.celery_app import create_celery
    from workers.dispatch import CeleryDispatcher

    settings = _settings()
    _prepare(settings)
    api = create_app(settings, dispatcher=CeleryDispatcher(create_celery(settings)))
    uvicorn.run(api, host=host, port=port, log_level=settings.log_level.lower())


@app.command()
def worker(concurrency: int = 2, queues: str = "certifier") -> None:
    """Run a Celery worker (executes runs and reconcile passes)."""
    from workers.celery_app import create_celery

    settings = _settings()
    _prepare(settings)
    celery = create_celery(settings)
    celery.worker_main(["worker", "--loglevel", settings.log_level, "--concurrency",
                        str(concurrency), "--queues", queues, "--without-gossip",
                        "--without-mingle", "--hostname", f"certifier-{os.getpid()}@%h"])


@app.command()
def beat() -> None:
    """Run Celery beat: the periodic reconcile pass that drives soak re-runs. Run only one."""
    from workers.celery_app import create_celery

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery = create_celery(settings)
    celery.start(["beat", "--loglevel", settings.log_level])


@app.command("reconcile")
def reconcile_once() -> None:
    """Run one reconcile pass here and now, and print what it did."""
    from certifier.db.session import make_engine, make_session_factory, session_scope
    from certifier.domain.clock import SystemClock
    from certifier.pipeline.scheduler import reconcile
    from workers.celery_app import create_celery

    settings = _settings()
    _prepare(settings)
    celery = create_celery(settings)
    ctx = celery.certifier
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(factory) as session:
        report = reconcile(session, SystemClock(), ctx.scheduler_policy, ctx.dispatcher)
    typer.echo(json.dumps({k: v for k, v in vars(report).items() if v}))


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from certifier.db import migrate

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at {migrate.current(settings.resolved_database_url)}")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ('base' removes every table)."""
    from certifier.db import migrate

    settings = _settings()
    migrate.downgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at {migrate.current(settings.resolved_database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision."""
    from certifier.db import migrate

    typer.echo(migrate.current(_settings().resolved_database_url) or "(empty)")


@manifest_app.command("show")
def manifest_show(
    fmt: Annotated[str, typer.Option("--format", help="json, yaml or env")] = "json",
    version: Annotated[int | None, typer.Option(help="a known-good version")] = None,
) -> None:
    """Print the current (or a given) known-good manifest."""
    from certifier.db.session import make_engine, make_session_factory, session_scope
    from certifier.pipeline import knowngood
    from certifier.pipeline.errors import NotFound

    settings = _settings()
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(factory) as session:
        try:
            kg = knowngood.get(session, version) if version else knowngood.current(session)
        except NotFound as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        if kg is None:
            typer.echo("no known-good yet", err=True)
            raise typer.Exit(1)
        doc = knowngood.manifest(session, kg)
    if fmt == "yaml":
        typer.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
    elif fmt == "env":
        typer.echo(f"CERTIFIER_MANIFEST_VERSION={doc['version']}")
        for comp in doc["components"]:
            typer.echo(f"CERTIFIER_{comp['name'].upper().replace('-', '_')}_SHA={comp['sha']}")
    else:
        typer.echo(json.dumps(doc, indent=2))


def _fresh_demo_root(root: Path) -> Path:
    if root.exists():
        if not (root / DEMO_MARKER).exists():
            typer.echo(f"{root} exists and is not a demo folder; choose another --root", err=True)
            raise typer.Exit(2)
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / DEMO_MARKER).write_text("made by `certifier demo`; removed by the next demo\n")
    return root.resolve()


def _demo_settings(root: Path) -> tuple[Settings, Any]:
    from certifier.demo import world as demo_world

    driver = "netns" if os.geteuid() == 0 else "local"
    if driver == "local":
        typer.echo("not root: the demo uses the local driver (loopback only), so the bandwidth "
                   "commit cannot be shaped and will not be caught", err=True)
    world = demo_world.build(root, driver=driver)
    data_dir = Path(os.environ.get("CERTIFIER_DATA_DIR") or root / "data")
    settings = _settings(config_file=world.config_file, data_dir=data_dir)
    return settings, world


def _run_demo(settings: Settings, world: Any, timeout: float) -> int:
    from certifier.db.session import make_engine, make_session_factory
    from certifier.demo import scenario
    from workers.celery_app import create_celery
    from workers.dispatch import CeleryDispatcher

    engine = make_engine(settings.resolved_database_url)
    try:
        outcome = scenario.run(make_session_factory(engine), world,
                               CeleryDispatcher(create_celery(settings)), timeout=timeout)
    except scenario.DemoFailed as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        return 1
    finally:
        engine.dispose()
    typer.echo(f"demo done in {outcome.elapsed_s:.0f} s: known-good #{outcome.known_good}; "
               f"bad commit {(outcome.bad_sha or '')[:12]} rejected "
               f"(candidate {outcome.bad_candidate})")
    return 0


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Folder for the demo world (recreated)")] = Path(
        "certifier-demo"),
    timeout: Annotated[float, typer.Option(help="Seconds before the demo gives up")] = 170.0,
) -> None:
    """Build the demo world, certify it, reject a bandwidth-halving commit, and exit."""
    from certifier import processes

    root = _fresh_demo_root(root)
    settings, world = _demo_settings(root)
    _prepare(settings)
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [processes.spawn(["worker"], settings, logs / "worker.log"),
             processes.spawn(["beat"], settings, logs / "beat.log")]
    try:
        code = _run_demo(settings, world, timeout)
    finally:
        processes.stop(procs)
    if code:
        typer.echo(f"worker log: {logs / 'worker.log'}", err=True)
    raise typer.Exit(code)


@app.command()
def up(
    host: str = "127.0.0.1",
    port: int = 8000,
    with_demo: Annotated[bool, typer.Option("--demo", help="Build and run the demo world")] = False,
    root: Path = Path("certifier-demo"),
) -> None:
    """Start API, worker and beat together; Ctrl-C stops all of them."""
    from certifier import processes

    world = None
    if with_demo:
        settings, world = _demo_settings(_fresh_demo_root(root))
    else:
        settings = _settings()
    _prepare(settings)
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        processes.spawn(["serve", "--host", host, "--port", str(port)], settings,
                        logs / "api.log"),
        processes.spawn(["worker"], settings, logs / "worker.log"),
        processes.spawn(["beat"], settings, logs / "beat.log"),
    ]
    typer.echo(f"certifier is up: http://{host}:{port}/ (API docs at /docs); logs in {logs}")
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        if world is not None:
            _run_demo(settings, world, timeout=300.0)
            typer.echo("the demo pipeline keeps running; press Ctrl-C to stop")
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = [p.args for p in procs if p.poll() is not None]
        if dead and not stopping:
            typer.echo(f"a process stopped unexpectedly: {dead}; see {logs}", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping…")
        processes.stop(procs)


def main() -> None:
    with contextlib.suppress(BrokenPipeError):
        app(prog_name="certifier")
    sys.exit(0)
