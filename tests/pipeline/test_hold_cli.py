"""``certifier hold add|list|release`` as an operator meets it, on a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from certifier.db import migrate
from certifier.db.session import make_engine, make_session_factory, session_scope
from certifier.domain.clock import SystemClock
from certifier.pipeline import components
from certifier.settings import ComponentConfig


def _certifier(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    environ["CERTIFIER_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "certifier", *args], capture_output=True,
                          text=True, env=environ, timeout=60, check=False)


def database_with_nova(tmp_path: Path) -> str:
    """The embedded database in ``tmp_path``, migrated, with one component ``nova``; its URL."""
    url = f"sqlite:///{tmp_path / 'certifier.sqlite'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as session:
        components.create_component(session, ComponentConfig(name="nova", url="/srv/nova.git"),
                                    SystemClock())
    engine.dispose()
    return url


def test_an_operator_arms_lists_and_releases_a_hold(tmp_path: Path) -> None:
    database_with_nova(tmp_path)

    added = _certifier("hold", "add", "--component", "nova", "--duration", "90m",
                       "--reason", "ping flaps", data_dir=tmp_path)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("hold 1: armed, for component nova, keeps 5400 s")
    assert "ping flaps" in added.stdout

    listed = _certifier("hold", "list", data_dir=tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith("hold 1: armed")

    released = _certifier("hold", "release", "1", data_dir=tmp_path)
    assert released.returncode == 0, released.stderr
    assert released.stdout.startswith("hold 1: released")
    assert _certifier("hold", "list", data_dir=tmp_path).stdout == ""
    assert "hold 1: released" in _certifier("hold", "list", "--all", data_dir=tmp_path).stdout


def test_bad_hold_requests_say_what_is_wrong(tmp_path: Path) -> None:
    migrate.upgrade(f"sqlite:///{tmp_path / 'certifier.sqlite'}")
    unknown = _certifier("hold", "add", "--component", "cinder", data_dir=tmp_path)
    assert unknown.returncode == 1 and "no component named 'cinder'" in unknown.stderr
    bad = _certifier("hold", "add", "--duration", "soon", data_dir=tmp_path)
    assert bad.returncode == 2 and "--duration" in bad.stderr
    missing = _certifier("hold", "release", "7", data_dir=tmp_path)
    assert missing.returncode == 1 and "no hold 7" in missing.stderr
