"""Configuration: the YAML file, the environment, and clear errors for bad input."""

from datetime import timedelta
from pathlib import Path

import pytest

from certifier.settings import ConfigError, load_config_file, load_settings, parse_config_text

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "certifier.yaml"


def test_the_shipped_example_is_valid() -> None:
    config = load_config_file(EXAMPLE)
    assert [c.name for c in config.components] == ["nova", "neutron"]
    assert config.soak.duration == timedelta(days=7)
    assert config.components[0].recipe == EXAMPLE.parent / "recipes" / "nova"
    assert str(config.thresholds.policy().limits[0]) == "bandwidth.throughput_gbps >= 1"


def test_short_durations_let_a_demo_soak_in_seconds() -> None:
    config = parse_config_text("soak: {duration: 30s, interval: 5s, min_runs: 2}")
    policy = config.soak.policy()
    assert (policy.duration, policy.interval, policy.min_runs) == (
        timedelta(seconds=30), timedelta(seconds=5), 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("components:\n  - name: Nova\n    url: x\n", r"components\.0\.name \(line 2\)"),
        ("testbeds:\n  - name: t\n    subnet: 10.0.0.0/24\n",
         r"testbeds\.0\.subnet \(line 3\): 10\.0\.0\.0/24 is outside 198\.18\.0\.0/15"),
        ("soak:\n  duration: soon\n", r"soak\.duration \(line 2\): not a duration"),
        ("soak:\n  min_runs: 0\n", r"soak\.min_runs \(line 2\)"),
        ("sok:\n  duration: 1d\n", r"sok \(line 1\): Extra inputs are not permitted"),
        ("components:\n  - name: a\n    url: x\n    branch: ../../etc\n", r"not a safe branch"),
        ("components:\n  - name: a\n    url: --upload-pack=x\n", r"not a usable repository"),
        ("thresholds:\n  limits: ['rm -rf / >= 1']\n", r"not a limit"),
        ("components: [\n", r"line \d+: not valid YAML"),
        ("- just\n- a list\n", r"top level must be a mapping"),
        ("testbeds:\n  - {name: a, subnet: 198.18.0.0/24}\n  - {name: b, subnet: 198.18.0.0/25}\n",
         r"overlapping subnets"),
        ("testbeds:\n  - {name: a, hosts: [h1, h1]}\n", r"unique"),
        ("detector:\n  floors: {'rm -rf': 2}\n", r"detector\.floors .*suite\.metric"),
        ("detector:\n  floors: {ping.rtt_p99_ms: 250}\n", r"between 0 and 100"),
        ("detector:\n  min_change: {bandwidth.udp_jitter_ms: -1}\n", r"0 or more"),
        ("detector:\n  min_change: {jitter: 1}\n", r"detector\.min_change .*suite\.metric"),
        ("detector:\n  false_reject_target: 0.9\n", r"detector\.false_reject_target \(line 2\)"),
        ("detector:\n  min_baseline_runs: 30\n  baseline_window: 20\n",
         r"baseline_window \(20\) is smaller than min_baseline_runs \(30\)"),
        ("environment:\n  ceilings: {cpu_load: 50}\n",
         r"environment\.ceilings .*unknown figures \['cpu_load'\]"),
        ("environment:\n  floors: {probe_tcp_gbps: -1}\n", r"environment\.floors .*0 or more"),
        ("environment:\n  min_history: 10\n  window: 5\n",
         r"window \(5\) is smaller than min_history \(10\)"),
        ("environment:\n  mad_k: 0\n", r"environment\.mad_k \(line 2\)"),
        ("environment:\n  controlled: never\n", r"environment\.controlled \(line 2\)"),
        ("ab:\n  min_rounds: 4\n  max_rounds: 3\n",
         r"ab \(line 1\): min_rounds \(4\) is more than max_rounds \(3\)"),
        ("ab:\n  run_kinds: [gate, baseline]\n", r"ab\.run_kinds\.1 \(line 2\)"),
        ("ab:\n  soak_rounds: 0\n", r"ab\.soak_rounds \(line 2\)"),
    ],
)
def test_bad_config_names_the_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config_text(text)


def test_environment_says_where_things_are(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("soak: {duration: 1h}\n")
    monkeypatch.setenv("CERTIFIER_CONFIG", str(cfg))
    monkeypatch.setenv("CERTIFIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CERTIFIER_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delenv("CERTIFIER_DATABASE_URL", raising=False)
    settings = load_settings()
    assert settings.config.soak.duration == timedelta(hours=1)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'data' / 'certifier.sqlite'}"
    assert not settings.embedded_broker


def test_no_broker_means_the_embedded_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTIFIER_BROKER_URL", raising=False)
    monkeypatch.delenv("CERTIFIER_CONFIG", raising=False)
    assert load_settings().embedded_broker


def test_missing_config_file_is_a_clear_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTIFIER_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings()


def test_the_detector_is_planned_for_the_whole_soak() -> None:
    settings = load_settings(config=parse_config_text(
        "soak:\n  duration: 3d\n  interval: 12h\ndetector:\n  floors: {ping.rtt_p99_ms: 5}\n"))
    detector = settings.judgement_policy().detector
    assert detector is not None
    assert detector.planned_checks == 6  # one check per soak run: 3 days of 12 hours
    assert detector.floor_for("ping", "rtt_p99_ms", counts=False) == 5.0
    assert detector.floor_for("bandwidth", "throughput_gbps", counts=False) == 1.0
    off = load_settings(config=parse_config_text("detector:\n  enabled: false\n"))
    assert off.judgement_policy().detector is None


def test_the_smallest_changes_that_matter_reach_the_gate_and_the_soak() -> None:
    settings = load_settings(config=parse_config_text(
        "detector:\n  min_change: {ping.rtt_avg_ms: 0.1}\n"))
    config = settings.config
    for policy in (config.ab.gate_policy(config.detector),
                   config.ab.soak_policy(config.detector, config.soak)):
        assert policy.min_change == {"bandwidth.udp_jitter_ms": 0.05, "ping.rtt_avg_ms": 0.1}
    quiet = parse_config_text("detector:\n  min_change: {bandwidth.udp_jitter_ms: 0}\n")
    assert quiet.ab.gate_policy(quiet.detector).min_change["bandwidth.udp_jitter_ms"] == 0


def test_the_environment_section_becomes_the_checks_policy() -> None:
    config = parse_config_text(
        "environment:\n  window: 10\n  ceilings: {background_cpu_pressure_pct: null}\n"
        "  floors: {probe_tcp_gbps: 25}\n")
    policy = config.environment.policy()
    assert policy.window == 10 and policy.ceiling("background_cpu_pressure_pct") is None
    assert policy.floor("probe_tcp_gbps") == 25 and policy.floor("cpu_steal_pct") == 5
    assert policy.controlled == "ceilings"  # the default: A/B runs refused by ceilings only
    strict = parse_config_text("environment:\n  controlled: usual\n").environment.policy()
    assert strict.controlled == "usual"


@pytest.mark.parametrize(("text", "key"), [
    ("components:\n  - name: nova\n    url: https://git.example/nova.git\n"
     "    poll_interval: 3000000d\n", "components.0.poll_interval (line 4)"),
    ("components:\n  - name: nova\n    url: https://git.example/nova.git\n"
     "    poll_interval: {}\n", "components.0.poll_interval (line 4)"),
    ("soak:\n  duration: 99999999999d\n", "soak.duration (line 2)"),
    ("tracking:\n  poll_tick: 1e20\n", "tracking.poll_tick (line 2)"),
])
def test_a_duration_out_of_bounds_is_a_config_error_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace(")", r"\)")):
        parse_config_text(text, "certifier.yaml")


def test_a_recipe_path_longer_than_its_column_is_a_config_error() -> None:
    text = "components:\n  - name: nova\n    url: u\n    recipe: " + "r/" * 600 + "x\n"
    with pytest.raises(ConfigError, match=r"components.0.recipe \(line 4\): .*at most 1000"):
        parse_config_text(text, "certifier.yaml")


def test_the_scheduler_policy_is_read_from_the_config_alone() -> None:
    """``certifier reconcile`` and the worker's pass read the same policy, with no Celery app."""
    from certifier.settings import Settings

    config = parse_config_text("scheduler: {run_timeout: 20m, parallel_gates: 3}\n"
                               "detector: {baseline_every: 4}\n"
                               "soak: {duration: 1h, interval: 10m, min_runs: 2}\n")
    policy = Settings(config=config).scheduler_policy()
    assert (policy.run_timeout, policy.parallel_gates, policy.baseline_every) == (
        timedelta(minutes=20), 3, 4)
    assert policy.soak == config.soak.policy()
    assert policy.notifications == config.notifications
    assert policy.bisection == config.bisection.policy(config.soak)
    off = parse_config_text("detector: {enabled: false, baseline_every: 4}\n")
    assert Settings(config=off).scheduler_policy().baseline_every == 0
