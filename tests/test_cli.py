"""The ``certifier`` command as an operator meets it: real processes, exit codes and messages."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _certifier(*args: str, data_dir: Path, timeout: float = 60,
               **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    environ.update({"CERTIFIER_DATA_DIR": str(data_dir), **env})
    return subprocess.run([sys.executable, "-m", "certifier", *args], capture_output=True,
                          text=True, env=environ, timeout=timeout, check=False)


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment mentions ``marker`` (our children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_bad_config_file_exits_2_naming_the_key_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("soak:\n  duration: 7d\n  interval: sometimes\n")
    done = _certifier("db", "upgrade", data_dir=tmp_path, CERTIFIER_CONFIG=str(bad))
    assert done.returncode == 2
    assert "soak.interval (line 3)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    done = _certifier("--config", str(tmp_path / "nope.yaml"), "db", "upgrade",
                      data_dir=tmp_path)
    assert done.returncode == 2
    assert "cannot read the config file" in done.stderr


def test_db_upgrade_migrates_the_embedded_database_to_head(tmp_path: Path) -> None:
    done = _certifier("db", "upgrade", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "certifier.sqlite").exists()
    current = _certifier("db", "current", data_dir=tmp_path)
    assert current.returncode == 0
    assert current.stdout.strip() and current.stdout.strip() in done.stdout


def test_manifest_show_without_a_known_good_says_so(tmp_path: Path) -> None:
    assert _certifier("db", "upgrade", data_dir=tmp_path).returncode == 0
    done = _certifier("manifest", "show", data_dir=tmp_path)
    assert done.returncode == 1
    assert "no known-good yet" in done.stderr


def test_reconcile_builds_no_celery_app_when_it_has_nothing_to_send(tmp_path: Path) -> None:
    """Its policy comes from the settings; Celery is imported only to send a task."""
    script = ("import sys\n"
              "from certifier.cli import app\n"
              "app(['reconcile'], prog_name='certifier', standalone_mode=False)\n"
              "print(sorted(m for m in sys.modules if m == 'workers.celery_app'\n"
              "             or m.partition('.')[0] in ('celery', 'kombu')))")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**environ, "CERTIFIER_DATA_DIR": str(tmp_path)}, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["{}", "[]"]


def test_reconcile_sends_the_runs_it_creates_to_the_broker(tmp_path: Path) -> None:
    config = tmp_path / "certifier.yaml"
    config.write_text("components: [{name: app, url: 'https://git.example.com/app.git'}]\n")
    script = ("from certifier.cli import _prepare, _settings\n"
              "from certifier.db.session import make_engine, make_session_factory, "
              "session_scope\n"
              "from certifier.domain.clock import SystemClock\n"
              "from certifier.pipeline.components import report_commit\n"
              "settings = _settings()\n"
              "_prepare(settings)\n"
              "factory = make_session_factory(make_engine(settings.resolved_database_url))\n"
              "with session_scope(factory) as session:\n"
              "    report_commit(session, 'app', 'a' * 40, SystemClock())\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    env = {**environ, "CERTIFIER_DATA_DIR": str(tmp_path), "CERTIFIER_CONFIG": str(config)}
    subprocess.run([sys.executable, "-c", script], env=env, timeout=60, check=True)
    done = _certifier("reconcile", data_dir=tmp_path, CERTIFIER_CONFIG=str(config))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["runs_created"]) == 1
    [message] = (tmp_path / "broker" / "queue").iterdir()
    assert "certifier.execute_run" in message.read_text()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_starts_api_worker_and_beat_and_a_stop_signal_ends_them_all_within_10_s(
    tmp_path: Path, stop_signal: signal.Signals,
) -> None:
    """SIGINT is what Ctrl-C sends; SIGTERM is what a script, systemd or a container runtime
    sends. Children get SIGTERM and, after ``processes.STOP_GRACE_S``, SIGKILL: the 10 s bound
    is that contract, not a speed target."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CERTIFIER_")}
    environ["CERTIFIER_DATA_DIR"] = str(tmp_path)
    up = subprocess.Popen([sys.executable, "-m", "certifier", "up", "--port", str(port)],
                          env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            pytest.fail("the API of `certifier up` never answered")
        children = _processes_with(str(tmp_path))
        assert len(children) >= 3  # api, worker (and its pool), beat
        up.send_signal(stop_signal)
        limit = time.monotonic() + 10
        output, _ = up.communicate(timeout=10)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, output
    assert "stopping" in output
    while (left := _processes_with(str(tmp_path))) and time.monotonic() < limit:
        time.sleep(0.1)  # a SIGKILLed pool process may take a moment to vanish
    assert left == []


@pytest.mark.parametrize("lifetime", ["99999999999d", "P99999999999D", "1e400"])
def test_a_token_lifetime_beyond_ten_years_exits_2_without_a_traceback(
    tmp_path: Path, lifetime: str,
) -> None:
    assert _certifier("db", "upgrade", data_dir=tmp_path).returncode == 0
    done = _certifier("token", "create", "ci", "--expires", lifetime, data_dir=tmp_path)
    assert done.returncode == 2
    assert "--expires:" in done.stderr and "Traceback" not in done.stderr


def test_a_demo_whose_first_candidate_is_stuck_exits_1_naming_the_reason(tmp_path: Path) -> None:
    """A checkout that cannot work (the mirrors' folder is a file) makes every run of the first
    candidate an infra error: the terminal shows each, then the exhausted retries, and the demo
    ends at once instead of waiting for its timeout."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "repos").write_text("not a folder\n")
    done = _certifier("demo", "--root", str(tmp_path / "demo"), data_dir=data, timeout=240)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("infra_error: unexpected error in the runner: FileExistsError") == 3
    assert "candidate 1 is stuck: 3 gate runs in a row" in done.stdout
    assert "demo failed: cannot reach the first known-good: candidate 1 waits for an operator" \
        in done.stderr


def test_pausing_a_component_from_the_cli_asks_the_broker_for_a_pass_as_the_api_does(
        tmp_path: Path) -> None:
    """The API's side is tests/api/test_after_commit.py: the service registers the pass."""
    from certifier.db.session import make_engine, make_session_factory, session_scope
    from certifier.domain.clock import SystemClock
    from certifier.pipeline import components
    from certifier.settings import ComponentConfig, Settings

    assert _certifier("db", "upgrade", data_dir=tmp_path).returncode == 0
    engine = make_engine(Settings(data_dir=tmp_path).resolved_database_url)
    with session_scope(make_session_factory(engine)) as session:
        components.create_component(
            session, ComponentConfig(name="nova", url="https://git.example/nova.git"),
            SystemClock())
    engine.dispose()
    done = _certifier("component", "pause", "nova", "--reason", "flaky", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "component nova: paused" in done.stdout
    sent = [m.read_text() for m in (tmp_path / "broker").rglob("*.msg")]
    assert sum("certifier.reconcile" in m for m in sent) == 1, sent
