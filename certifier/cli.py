"""The ``certifier`` command: run the service's processes, manage the database, run the demo.

Every command builds the one Settings object from ``CERTIFIER_*`` variables (and ``--config``);
a bad config file prints one clear message and exits with status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
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
hold_app = typer.Typer(no_args_is_help=True,
                       help="Autoholds: keep a failed run's testbed for a person to inspect.")
app.add_typer(hold_app, name="hold")
token_app = typer.Typer(no_args_is_help=True,
                        help="API bearer tokens (scopes read, operate, admin); stored hashed.")
app.add_typer(token_app, name="token")
candidate_app = typer.Typer(no_args_is_help=True,
                            help="Operator actions on a candidate that the API also offers.")
app.add_typer(candidate_app, name="candidate")
component_app = typer.Typer(no_args_is_help=True,
                            help="Operator actions on a component that the API also offers "
                                 "(register one in the config file).")
app.add_typer(component_app, name="component")

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


def _migrate(settings: Settings) -> None:
    """Create the data folder and migrate the database to head."""
    from certifier.db import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)


def _prepare(settings: Settings) -> None:
    """Create the data folder, migrate the database and load the config's components."""
    from certifier.db.session import make_engine, make_session_factory, session_scope
    from certifier.domain.clock import SystemClock
    from certifier.pipeline.components import sync_from_config

    _migrate(settings)
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            sync_from_config(session, settings.config.components, settings.config.testbeds,
                             SystemClock())
    finally:
        engine.dispose()


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int | None, typer.Option(
        min=1, max=64, show_default="one per core, at most 4",
        help="uvicorn worker processes sharing the port; each builds its own app")] = None,
) -> None:
    """Serve the REST API and the dashboard (uvicorn with the limits of certifier/api/server)."""
    from certifier.api import server

    workers = workers or server.default_workers()
    settings = _settings()
    _prepare(settings)
    app_ref: Any = _served_app(settings) if workers == 1 else "certifier.cli:_served_app"
    server.serve(app_ref, host=host, port=port, log_level=settings.log_level.lower(),
                 workers=workers)


def _served_app(settings: Settings | None = None) -> Any:
    """The app `serve` runs; with ``--workers`` uvicorn calls this in each worker process, which
    reads the same CERTIFIER_* environment (``--config`` and ``--data-dir`` set it)."""
    from certifier.api import server
    from certifier.api.app import create_app
    from workers.celery_app import create_celery
    from workers.dispatch import CeleryDispatcher

    settings = settings or _settings()
    server.favour_the_event_loop()
    return create_app(settings, dispatcher=CeleryDispatcher(create_celery(settings)))


@app.command()
def worker(
    concurrency: int = 2,
    queues: str = "certifier",
    testbed: Annotated[str | None, typer.Option(
        help="Claim only this testbed (CERTIFIER_WORKER_TESTBED): one worker per testbed, "
             "e.g. on the machine that carries it")] = None,
) -> None:
    """Run a Celery worker (executes runs and reconcile passes)."""
    settings = _settings(**({"worker_testbed": testbed} if testbed is not None else {}))
    known = [t.name for t in settings.config.testbeds]
    if settings.worker_testbed is not None and settings.worker_testbed not in known:
        typer.echo(f"certifier: no testbed {settings.worker_testbed!r} in the configuration "
                   f"(testbeds: {', '.join(known)})", err=True)
        raise typer.Exit(2)
    from workers.celery_app import create_celery

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
    from workers.dispatch import CeleryDispatcher, OnFirstSend

    def celery() -> Any:  # only if the pass starts a run: then its task goes to the broker
        from workers.celery_app import create_celery

        return create_celery(settings)

    settings = _settings()
    _prepare(settings)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(factory) as session:
        report = reconcile(session, SystemClock(), settings.scheduler_policy(),
                           CeleryDispatcher(OnFirstSend(celery)))
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
    from certifier.domain.clock import SystemClock
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
        doc = knowngood.manifest(session, kg, SystemClock().now(),
                                 settings.config.manifest.validity)
    if fmt == "yaml":
        typer.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
    elif fmt == "env":
        typer.echo(f"CERTIFIER_MANIFEST_VERSION={doc['version']}")
        for comp in doc["components"]:
            typer.echo(f"CERTIFIER_{comp['name'].upper().replace('-', '_')}_SHA={comp['sha']}")
    else:
        typer.echo(json.dumps(doc, indent=2))


def _hold_line(hold: Any) -> str:
    wants = ", ".join(filter(None, [f"candidate {hold.candidate_id}" if hold.candidate_id else "",
                                    f"component {hold.component}" if hold.component else ""]))
    text = (f"hold {hold.id}: {hold.state}, for {wants or 'any candidate'}, "
            f"keeps {hold.duration_s} s")
    if hold.run_id:
        text += f"; run {hold.run_id} on {hold.testbed} (tag {hold.tag})"
    if hold.expires_at and hold.state == "holding":
        text += f" until {hold.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    if hold.reason:
        text += f" — {hold.reason}"
    return text


@hold_app.command("add")
def hold_add(
    candidate: Annotated[int | None, typer.Option(help="hold a run of this candidate")] = None,
    component: Annotated[str | None, typer.Option(
        help="hold a run of a candidate that changes this component")] = None,
    duration: Annotated[str, typer.Option(help="how long a caught testbed is kept")] = "2h",
    reason: str = "",
) -> None:
    """Keep the testbed of the next failed (or regressed) run that matches."""
    import getpass

    from certifier.db.session import make_engine, make_session_factory, session_scope
    from certifier.domain.clock import SystemClock
    from certifier.domain.durations import DurationError, parse_duration
    from certifier.pipeline import autohold
    from certifier.pipeline.errors import ServiceError

    settings = _settings()
    try:
        keep_for = parse_duration(duration)
    except DurationError as exc:
        typer.echo(f"--duration: {exc}", err=True)
        raise typer.Exit(2) from None
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    try:
        with session_scope(factory) as session:
            hold = autohold.request(session, SystemClock(), duration=keep_for,
                                    actor=f"cli:{getpass.getuser()}", candidate_id=candidate,
                                    component=component, reason=reason)
            typer.echo(_hold_line(hold))
    except ServiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@hold_app.command("list")
def hold_list(
    show_all: Annotated[bool, typer.Option("--all", help="released holds too")] = False,
) -> None:
    """Holds, newest first, with the commands to enter a kept testbed."""
    from certifier.db.session import make_engine, make_session_factory, session_scope
    from certifier.pipeline import autohold

    settings = _settings()
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(factory) as session:
        holds = autohold.list_holds(session, limit=500)
        for hold in holds:
            if not show_all and hold.state == autohold.HoldState.RELEASED:
                continue
            typer.echo(_hold_line(hold))
            if hold.state == autohold.HoldState.HOLDING:
                for command in hold.commands:
                    typer.echo(f"    {command}")


@hold_app.command("release")
def hold_release(hold_id: int) -> None:
    """Let a hold go; a kept testbed is torn down by the worker at its next reconcile pass."""
    import getpass

    from certifier.domain.clock import SystemClock
    from certifier.pipeline import autohold
    from certifier.pipeline.errors import ServiceError

    try:
        with _action_scope(_settings(), "tears it down") as session:
            hold = autohold.release(session, hold_id, SystemClock(), f"cli:{getpass.getuser()}")
            typer.echo(_hold_line(hold))
    except ServiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@contextlib.contextmanager
def _action_scope(settings: Settings, what: str) -> Iterator[Any]:
    """A unit of work for an operator action, bound like the API's request session: the
    after-commit work the service registers (a reconcile pass now rather than at beat's next
    tick) goes to the broker once it commits. ``what``: what that pass does, said if the
    broker cannot be reached."""
    from certifier.db.session import session_scope
    from certifier.pipeline.dispatch import bind
    from workers.dispatch import OnDemandDispatcher

    def unreachable(exc: Exception) -> None:
        typer.echo(f"(could not reach the broker: {exc}; the next periodic pass {what})",
                   err=True)

    with session_scope(_session_factory(settings)) as session:
        yield bind(session, OnDemandDispatcher(settings, unreachable))


def _mark(candidate_id: int, reason: str, *, bad: bool) -> None:
    """Mark (or unmark) a candidate's combination bad, as ``cli:<user>``, audited."""
    import getpass

    from certifier.domain.clock import SystemClock
    from certifier.pipeline import actions
    from certifier.pipeline.errors import ServiceError

    actor = f"cli:{getpass.getuser()}"
    change = actions.mark_bad if bad else actions.unmark_bad
    try:
        with _action_scope(_settings(), "acts on it") as session:
            cand = change(session, SystemClock(), actor, candidate_id, reason)
            typer.echo(f"candidate {cand.id}: {cand.state}; combination {cand.combination_hash} "
                       f"{'marked bad' if bad else 'no longer marked bad'}")
    except ServiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@candidate_app.command("mark-bad")
def candidate_mark_bad(
    candidate_id: Annotated[int, typer.Argument(help="the candidate's id")],
    reason: Annotated[str, typer.Option(help="why: kept in the audit log")],
) -> None:
    """Mark a candidate's combination bad: never formed or promoted again; an open candidate
    is cancelled. The scheduler acts on it at its next pass."""
    if not reason.strip():
        typer.echo("--reason must say why", err=True)
        raise typer.Exit(2)
    _mark(candidate_id, reason, bad=True)


@candidate_app.command("retry")
def candidate_retry(
    candidate_id: Annotated[int, typer.Argument(help="the candidate's id")],
    reason: Annotated[str, typer.Option(help="why: kept in the audit log")],
) -> None:
    """Retry a candidate whose infra retries ran out: its infra streak restarts now, and the
    next pass runs it again. Exit 1 when there is nothing to retry."""
    from certifier.domain.clock import SystemClock
    from certifier.pipeline import actions

    _candidate_action(reason, "runs it", "retried, its infra retries start again",
                      lambda session, settings, actor: actions.retry(
                          session, SystemClock(), candidate_id, actor, reason,
                          settings.soak_policy()))


@candidate_app.command("stop-culprit-finding")
def candidate_stop_culprit_finding(
    candidate_id: Annotated[int, typer.Argument(help="the candidate's id")],
    reason: Annotated[str, typer.Option(help="why: kept in the audit log")],
) -> None:
    """Stop the culprit finding of a rejected candidate: its pending bisect runs are withdrawn
    and the train moves on at the next pass. Exit 1 when none runs."""
    from certifier.domain.clock import SystemClock
    from certifier.pipeline import actions

    _candidate_action(reason, "lets the train move on", "culprit finding stopped",
                      lambda session, _, actor: actions.stop_culprit_finding(
                          session, SystemClock(), candidate_id, actor, reason))


def _candidate_action(reason: str, then: str, done: str,
                      act: Callable[[Any, Settings, str], Any]) -> None:
    """One audited action on a candidate as ``cli:<user>``: ``act(session, settings, actor)``
    returns the candidate. Exit 2 without a reason, 1 with the service's word when refused;
    ``then``: what the reconcile pass it asks for does; ``done``: said after the state."""
    import getpass

    from certifier.pipeline.errors import ServiceError

    if not reason.strip():
        typer.echo("--reason must say why", err=True)
        raise typer.Exit(2)
    settings = _settings()
    try:
        with _action_scope(settings, then) as session:
            cand = act(session, settings, f"cli:{getpass.getuser()}")
            typer.echo(f"candidate {cand.id}: {cand.state}; {done}")
    except ServiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@candidate_app.command("unmark-bad")
def candidate_unmark_bad(
    candidate_id: Annotated[int, typer.Argument(help="the candidate's id")],
    reason: Annotated[str, typer.Option(help="why: kept in the audit log")] = "",
) -> None:
    """Lift the mark; a candidate it cancelled stays cancelled."""
    _mark(candidate_id, reason, bad=False)


def _component_action(action: str, name: str, reason: str) -> None:
    """Pause, resume or remove a component as ``cli:<user>``, audited like the API's."""
    import getpass

    from certifier.domain.clock import SystemClock
    from certifier.pipeline import components
    from certifier.pipeline.errors import ServiceError

    if not reason.strip():
        typer.echo("--reason must say why", err=True)
        raise typer.Exit(2)
    change = {"pause": components.pause, "resume": components.resume,
              "remove": components.remove}[action]
    try:
        with _action_scope(_settings(), "acts on it") as session:
            row = change(session, SystemClock(), name, f"cli:{getpass.getuser()}", reason)
            state = "removed" if row.removed_at else "paused" if row.paused else "tracked"
            typer.echo(f"component {row.name}: {state}")
    except ServiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@component_app.command("pause")
def component_pause(
    name: str, reason: Annotated[str, typer.Option(help="why: kept in the audit log")],
) -> None:
    """Hold a component at its known-good commit: new candidates do not move it."""
    _component_action("pause", name, reason)


@component_app.command("resume")
def component_resume(
    name: str, reason: Annotated[str, typer.Option(help="why: kept in the audit log")],
) -> None:
    """Let a paused component take part in candidates again."""
    _component_action("resume", name, reason)


@component_app.command("remove")
def component_remove(
    name: str, reason: Annotated[str, typer.Option(help="why: kept in the audit log")],
) -> None:
    """Stop tracking a component and leave it out of candidates; its history stays. Refused
    while the current known-good or an open candidate has it. Take it out of the config file
    too, or the next start brings it back."""
    _component_action("remove", name, reason)


@app.command()
def status() -> None:
    """Show the pipeline at a glance: the known-good, the soaks and their progress, testbeds.

    Migrates the database first, as the other commands do (a fresh data folder shows an empty
    pipeline), but loads nothing from the config file: it only reads."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from certifier.db.session import make_engine, make_session_factory, session_scope
    from certifier.domain.clock import SystemClock
    from certifier.pipeline import read
    from certifier.web.terminal import render_overview

    settings = _settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        _migrate(settings)
        with session_scope(make_session_factory(engine)) as session:
            overview = read.overview(session, SystemClock().now(), settings.soak_policy(),
                                     read.stale_after(settings))
    except (SQLAlchemyError, CommandError, OSError) as exc:  # unreachable, unknown revision
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        typer.echo(f"certifier: cannot read the pipeline from the database ({reason}); "
                   "check CERTIFIER_DATA_DIR and CERTIFIER_DATABASE_URL", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(render_overview(overview, width=shutil.get_terminal_size((100, 24)).columns))


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
    # Three soak runs of two A/B rounds: six rounds, enough for a series that a busy machine
    # left undecided at the gate to show that it points worse (and hold the candidate).
    world = demo_world.build(root, driver=driver, min_runs=3)
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
    rejected = ", ".join(f"{r.component} {r.sha[:12]} (candidate {r.candidate})"
                         for r in outcome.rejections)
    typer.echo(f"demo done in {outcome.elapsed_s:.0f} s: known-good #{outcome.known_good}; "
               f"{len(outcome.rejections)} bad commits rejected: {rejected}; "
               f"the fixes promoted as known-good #{outcome.final_known_good}")
    return 0


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Folder for the demo world (recreated)")] = Path(
        "certifier-demo"),
    timeout: Annotated[float, typer.Option(help="Seconds before the demo gives up")] = 900.0,
) -> None:
    """Build the demo world, certify it, reject five commits that break it, promote the fixes.

    Exits 1 with the reason as soon as the demo cannot go on (a candidate stuck on infra errors,
    a rejected candidate that had to be promoted), 130 when stopped by SIGINT or SIGTERM."""
    from certifier import processes

    procs: list[Any] = []
    processes.interrupt_on_stop_signals()
    try:
        root = _fresh_demo_root(root)
        settings, world = _demo_settings(root)
        _prepare(settings)
        logs = settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        procs.append(processes.spawn(["worker"], settings, logs / "worker.log"))
        procs.append(processes.spawn(["beat"], settings, logs / "beat.log"))
        code = _run_demo(settings, world, timeout)
    except KeyboardInterrupt:
        typer.echo("demo stopped by a signal", err=True)
        code = 130
    finally:
        processes.ignore_stop_signals()
        processes.stop(procs)
    if code == 1:
        typer.echo(f"worker log: {logs / 'worker.log'}", err=True)
    raise typer.Exit(code)


@app.command()
def up(
    host: str = "127.0.0.1",
    port: int = 8000,
    with_demo: Annotated[bool, typer.Option("--demo", help="Build and run the demo world")] = False,
    root: Path = Path("certifier-demo"),
) -> None:
    """Start API, worker and beat together; Ctrl-C or SIGTERM stops all of them within seconds."""
    from certifier import processes

    procs: list[Any] = []
    processes.interrupt_on_stop_signals()
    try:
        world = None
        if with_demo:
            settings, world = _demo_settings(_fresh_demo_root(root))
        else:
            settings = _settings()
        _prepare(settings)
        logs = settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        procs.append(processes.spawn(["serve", "--host", host, "--port", str(port)], settings,
                                     logs / "api.log"))
        procs.append(processes.spawn(["worker"], settings, logs / "worker.log"))
        procs.append(processes.spawn(["beat"], settings, logs / "beat.log"))
        typer.echo(f"certifier is up: http://{host}:{port}/ (API docs at /docs); logs in {logs}")
        if world is not None:
            if _run_demo(settings, world, timeout=900.0):
                typer.echo(f"the service keeps running; worker log: {logs / 'worker.log'}; "
                           "press Ctrl-C to stop", err=True)
            else:
                typer.echo("the demo pipeline keeps running; press Ctrl-C to stop")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = [p.args for p in procs if p.poll() is not None]
        typer.echo(f"a process stopped unexpectedly: {dead}; see {logs}", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        processes.ignore_stop_signals()
        if procs:
            typer.echo("stopping…")
        processes.stop(procs)
    # Every child is stopped and nothing is left to save: skip the interpreter's teardown, which
    # took 3-5 s of CPU on a busy host after the demo (numpy, scipy and friends) and would count
    # against the promise that a signal stops `up` within seconds.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    with contextlib.suppress(BrokenPipeError):
        app(prog_name="certifier")
    sys.exit(0)


def _session_factory(settings: Settings) -> Any:
    from certifier.db.session import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.resolved_database_url))


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="who or what holds it; the audit log's actor")],
    scope: Annotated[str, typer.Option(help="read, operate or admin")] = "operate",
    expires: Annotated[str | None, typer.Option(help="lifetime, e.g. 30d; none: no expiry")] = None,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="also print its CERTIFIER_API_TOKENS entry (hash only)")] = False,
) -> None:
    """Create a token and print its secret — once: only its hash is stored."""
    import getpass

    from certifier.db.session import session_scope
    from certifier.domain.clock import SystemClock
    from certifier.domain.durations import DurationError, parse_duration
    from certifier.pipeline import tokens
    from certifier.pipeline.errors import ServiceError

    try:
        wanted = tokens.Scope(scope)
    except ValueError:
        typer.echo("--scope: one of read, operate, admin", err=True)
        raise typer.Exit(2) from None
    try:
        lifetime = parse_duration(expires) if expires else None
    except DurationError as exc:
        typer.echo(f"--expires: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        with session_scope(_session_factory(_settings())) as session:
            row, secret = tokens.create(session, SystemClock(), name, wanted, lifetime,
                                        created_by=f"cli:{getpass.getuser()}")
            until = f", expires {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else ""
            typer.echo(f"token {row.name} ({row.scope}{until}); the secret, shown only now:",
                       err=True)
            typer.echo(secret)
            if print_config:
                typer.echo(f"CERTIFIER_API_TOKENS entry: {row.name}/{row.scope}:sha256:"
                           f"{row.secret_sha256}", err=True)
    except ServiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@token_app.command("list")
def token_list() -> None:
    """Tokens with scope, expiry, revocation and last use (never their secrets)."""
    from certifier.db.session import session_scope
    from certifier.pipeline import tokens

    with session_scope(_session_factory(_settings())) as session:
        for row in tokens.list_tokens(session):
            when = "{:%Y-%m-%d %H:%M}".format
            state = (f"revoked {when(row.revoked_at)}" if row.revoked_at else
                     f"expires {when(row.expires_at)}" if row.expires_at else "no expiry")
            used = f"last used {when(row.last_used_at)}" if row.last_used_at else "never used"
            typer.echo(f"{row.name}\t{row.scope}\t{state}\t{used}")


@token_app.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke a token at once; calls with it then answer 401."""
    from certifier.db.session import session_scope
    from certifier.domain.clock import SystemClock
    from certifier.pipeline import tokens
    from certifier.pipeline.errors import ServiceError

    try:
        with session_scope(_session_factory(_settings())) as session:
            row = tokens.revoke(session, SystemClock(), name)
            typer.echo(f"token {row.name} revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    except ServiceError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@manifest_app.command("verify")
def manifest_verify(
    manifest: Annotated[Path, typer.Argument(help="the manifest bytes as downloaded")],
    signature: Annotated[Path, typer.Argument(help="its detached signature (manifest.sig)")],
    key: Annotated[Path | None, typer.Option(
        help="public key PEM (GET /api/v1/signing-key); default: this server's own key")] = None,
    at: Annotated[str | None, typer.Option(
        help="judge expiry as of this ISO 8601 time (an audit); default: now")] = None,
) -> None:
    """Check a manifest against its detached Ed25519 signature, and that it is still valid.

    A good signature is not enough: a manifest whose ``expires_at`` has passed, or that says
    its known-good was revoked, is refused too (exit status 1), as TUF refuses a stale
    timestamp. Fetch a fresh copy: the API signs the current state again.
    """
    from datetime import UTC, datetime

    from certifier.pipeline import knowngood, signing

    own = _settings().signing_key_path
    if key is None and not own.exists():
        typer.echo(f"no signing key at {own}: pass --key with the server's public key", err=True)
        raise typer.Exit(2)
    try:
        when = datetime.fromisoformat(at) if at else datetime.now(UTC)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    except ValueError:
        typer.echo(f"--at: not an ISO 8601 time: {at!r}", err=True)
        raise typer.Exit(2) from None
    pem = key.read_text() if key is not None else signing.Signer(own).public_pem()
    body = manifest.read_bytes()
    if not signing.verify(body, signature.read_text(), pem):
        typer.echo(f"{manifest}: BAD signature — the file was changed after signing, or it was "
                   "signed by another key", err=True)
        raise typer.Exit(1)
    try:
        problem = knowngood.freshness_problem(knowngood.envelope_of(body), when)
    except (ValueError, yaml.YAMLError):
        problem = "the signed bytes are not a manifest"
    if problem is not None:
        typer.echo(f"{manifest}: good signature, but {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{manifest}: good signature, valid until "
               f"{knowngood.envelope_of(body).get('expires_at')}")
