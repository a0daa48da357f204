"""``certifier status``: the overview in a terminal, read straight from the database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certifier.db import migrate
from certifier.db.session import make_engine, make_session_factory
from certifier.domain.clock import FakeClock
from certifier.pipeline import read
from certifier.web.terminal import bar, clean, render_overview
from tests.web.scenes import Scene, busy_pipeline

STATUS_CONFIG = """\
soak: {duration: 1h, interval: 10m, min_runs: 1, max_infra_retries: 1}
"""


def _status(data_dir: Path, config: Path, **more: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    env.update(CERTIFIER_DATA_DIR=str(data_dir), CERTIFIER_CONFIG=str(config), COLUMNS="120",
               **more)
    return subprocess.run([sys.executable, "-m", "certifier", "status"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_status_prints_the_known_good_the_soak_progress_and_the_testbeds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'certifier.sqlite'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    # The pipeline ran up to a little while ago by the wall clock the command reads.
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=4))
    busy = busy_pipeline(Scene(make_session_factory(engine), clock))
    assert clock.now() < datetime.now(UTC)
    engine.dispose()
    config = tmp_path / "certifier.yaml"
    config.write_text(STATUS_CONFIG)

    done = _status(tmp_path, config)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Known-good #2" in out and "Libvirt: cache domain capabilities" in out
    soak = next(line for line in out.splitlines() if f"#{busy.soaking}" in line)
    assert soak.lstrip().startswith("soaking") and "[####" in soak and "of 1 h" in soak
    assert "2 of >=1 passing soak runs, 3 so far, one running" in out
    assert f"queued   #{busy.queued}" in out
    assert "rejected" in out and "bandwidth throughput_gbps" in out
    assert "gate1" in out and "free" in out
    assert f"soak1        soak  netns  run {busy.soak_run} (candidate {busy.soaking}" in out


def test_status_on_a_fresh_data_folder_migrates_and_shows_an_empty_pipeline(
    tmp_path: Path,
) -> None:
    config = tmp_path / "certifier.yaml"
    config.write_text(STATUS_CONFIG)
    done = _status(tmp_path / "fresh", config)
    assert done.returncode == 0, done.stderr
    assert "Known-good: none yet" in done.stdout
    assert "nothing queued, gating or soaking" in done.stdout
    assert (tmp_path / "fresh" / "certifier.sqlite").exists()
    assert _status(tmp_path / "fresh", config).returncode == 0  # and again, already at head


def test_status_without_a_database_explains_itself(tmp_path: Path) -> None:
    """A database it cannot reach (status migrates a fresh one, so "nowhere" needs a server
    that is not there)."""
    config = tmp_path / "certifier.yaml"
    config.write_text(STATUS_CONFIG)
    done = _status(tmp_path / "nowhere", config,
                   CERTIFIER_DATABASE_URL="postgresql://certifier@127.0.0.1:1/nowhere")
    assert done.returncode == 1
    assert "cannot read the pipeline from the database" in done.stderr


def test_terminal_text_loses_escape_sequences_and_bidi_overrides() -> None:
    assert clean("fix\x1b[2J\x1b[31mred\x07 \u202egnp.exe\r\nnext") == "fix[2J[31mred gnp.exe  next"


def test_a_bar_fills_in_proportion() -> None:
    assert bar(0.0, 4) == "[----]"
    assert bar(0.5, 4) == "[##--]"
    assert bar(1.7, 4) == "[####]"


def test_an_empty_pipeline_renders_without_surprises() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    text = render_overview(read.Overview(now=now, known_good=None,
                                          stale_after=timedelta(days=3), queued=(), gating=(),
                                          soaking=(), decisions=(), testbeds=(), counts={}))
    assert "Known-good: none yet" in text
    assert "nothing queued, gating or soaking" in text
    assert all(len(line) <= 100 for line in text.splitlines())
