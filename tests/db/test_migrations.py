"""The migrations build exactly the models' schema, both ways, on SQLite and PostgreSQL.

Each test gets a fresh database of its own (``empty_database_url``), never the shared one the
other tests roll back in.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from alembic.config import Config
from sqlalchemy import Column, Integer, MetaData, inspect, text

from certifier.db import migrate
from certifier.db.models import Base
from certifier.db.session import make_engine

REPO = Path(__file__).resolve().parents[2]
MODEL_TABLES = set(Base.metadata.tables)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _execute(url: str, statement: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def test_there_is_one_head_and_every_revision_file_is_date_prefixed() -> None:
    assert migrate.head() is not None
    names = [p.name for p in (migrate.MIGRATIONS_DIR / "versions").glob("*.py")]
    assert names
    assert all(re.fullmatch(r"\d{4}_\d{2}_\d{2}_\d{4}_[0-9a-f]+_\w+\.py", n) for n in names), names


def test_upgrade_downgrade_and_upgrade_again_build_and_drop_every_table(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url)
    assert _tables(empty_database_url) == MODEL_TABLES

    migrate.downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) == set()
    assert migrate.current(empty_database_url) is None

    migrate.upgrade(empty_database_url)
    assert _tables(empty_database_url) == MODEL_TABLES
    assert migrate.check(empty_database_url) == []


def test_current_is_none_before_and_head_after_the_upgrade(empty_database_url: str) -> None:
    assert migrate.current(empty_database_url) is None
    migrate.upgrade(empty_database_url)
    assert migrate.current(empty_database_url) == migrate.head()


def test_models_and_migrations_agree(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    assert migrate.check(empty_database_url) == []


def test_check_reports_a_model_column_without_a_migration(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["runs"].append_column(Column("priority", Integer, nullable=True))

    assert migrate.check(empty_database_url, drifted) == ["add_column: runs.priority"]


def test_check_reports_a_table_missing_from_the_database(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    _execute(empty_database_url, "DROP TABLE testbeds")

    assert migrate.check(empty_database_url) == ["add_table: testbeds"]


def test_check_reports_a_database_that_was_never_migrated(empty_database_url: str) -> None:
    problems = migrate.check(empty_database_url)
    assert problems[0] == f"database at revision None, head is {migrate.head()}"
    assert len(problems) > len(MODEL_TABLES)  # and every table is missing


def test_two_processes_started_together_both_upgrade_without_error(
    empty_database_url: str,
) -> None:
    # Both processes import first, then start upgrading at the same instant, as the API and
    # the worker do when `certifier up` starts them.
    start_at = time.time() + 2
    script = (
        "import sys, time\n"
        "from certifier.db import migrate\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "migrate.upgrade(sys.argv[1])\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, empty_database_url, str(start_at)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=60), p.communicate()[1]) for p in processes]

    assert [code for code, _ in outcomes] == [0, 0, 0], [err for _, err in outcomes]
    assert migrate.current(empty_database_url) == migrate.head()
    assert migrate.check(empty_database_url) == []


def test_the_alembic_ini_for_hand_use_matches_the_config_built_in_code() -> None:
    by_hand, in_code = Config(str(REPO / "alembic.ini")), migrate.alembic_config()

    for option in ("path_separator", "file_template", "timezone", "truncate_slug_length"):
        assert by_hand.get_main_option(option) == in_code.get_main_option(option), option
    script_location = by_hand.get_main_option("script_location")
    assert script_location is not None
    assert Path(script_location).resolve() == migrate.MIGRATIONS_DIR


def test_the_run_stats_revision_rolls_up_runs_finished_before_it(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url, "5c0e2f7a9d13")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO combinations (hash, created_at) "
                              "VALUES ('c1', '2026-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO candidates (id, combination_hash, state, changed, excuses, "
                "created_at, updated_at) VALUES (1, 'c1', 'soaking', '[]', '[]', "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
            for run_id, attempt, seconds, verdict, state in (
                    (1, 1, 3, "passed", "finished"), (2, 2, 40, "passed", "finished"),
                    (3, 3, 50, "regressed", "finished"), (4, 4, 9, None, "running")):
                conn.execute(text(
                    "INSERT INTO runs (id, candidate_id, kind, attempt, state, verdict, excuses, "
                    "tool_versions, log, created_at, started_at, finished_at) VALUES "
                    "(:id, 1, 'soak', :attempt, :state, :verdict, '[]', '{}', '', "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00', :finished)"),
                    {"id": run_id, "attempt": attempt, "state": state, "verdict": verdict,
                     "finished": f"2026-01-01 00:00:{seconds:02d}"})
        migrate.upgrade(empty_database_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT verdict, bucket, runs, seconds FROM run_stats "
                                     "ORDER BY verdict, bucket")).all()
    finally:
        engine.dispose()
    # buckets: <=1, <=5 (index 1), <=15, <=30, <=60 (index 4) …; the running run is not counted
    assert [tuple(r) for r in rows] == [("passed", 1, 1, 3.0), ("passed", 4, 1, 40.0),
                                        ("regressed", 4, 1, 50.0)]
