"""Pipeline states the dashboard tests look at, built through the real services.

:class:`Scene` extends the API tests' ``World`` with what a dashboard needs to show: components
on real forges (so commit links are built), suites that measure ping, bandwidth and storage with
numbers that move a little from run to run, and a regression. :func:`busy_pipeline` builds a
history a developer would recognise: two known-goods, a rejected candidate with a culprit, one
soaking (part way through, a soak run in progress) and one queued behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from certifier.db.session import session_scope
from certifier.domain.clock import FakeClock
from certifier.domain.results import Better, Check, Measurement, SuiteResult
from certifier.pipeline import components
from certifier.settings import CertifierConfig, ComponentConfig, Settings, SoakConfig
from tests.factories import SOAK, World

EVIL = '<script>alert("owned")</script>'
FORGES = {
    "nova": ("git", "https://opendev.org/openstack/nova.git"),
    "neutron": ("github", "https://github.com/openstack/neutron.git"),
    "cinder": ("gitlab", "https://gitlab.com/openstack/cinder.git"),
}


OPERATOR_TOKEN = "dashboard-tests-operator-secret"


def world_settings(data_dir: Path) -> Settings:
    """Settings whose soak policy is the world's, so pages and scheduler agree on progress,
    and with one operator token (``CERTIFIER_API_TOKENS``) where the settings know of tokens."""
    soak = SoakConfig(duration=SOAK.duration, interval=SOAK.interval, min_runs=SOAK.min_runs,
                      max_infra_retries=SOAK.max_infra_retries,
                      recheck_failed=SOAK.recheck_failed)
    tokens = ({"api_tokens": f"dashboard-tests:{OPERATOR_TOKEN}"}
              if "api_tokens" in Settings.model_fields else {})
    return Settings(data_dir=data_dir, config=CertifierConfig(soak=soak), **tokens)


def suite_results(bandwidth_gbps: float = 0.78, jitter: int = 0,
                  reach: bool = True) -> list[SuiteResult]:
    """Ping, bandwidth and storage results; ``jitter`` nudges the numbers run to run."""
    wobble = 1 + 0.01 * ((jitter * 7) % 5 - 2)
    pair = {"src": "h1", "dst": "h2"}
    return [
        SuiteResult("ping", checks=[Check("ping", "reach h1->h2", reach,
                                          "0 % loss" if reach else "100 % loss")],
                    measurements=[
                        Measurement("ping", "rtt_avg_ms", 0.061 * wobble, "ms", Better.LOWER, pair),
                        Measurement("ping", "loss_pct", 0.0, "%", Better.LOWER, pair)],
                    tool_versions={"ping": "iputils 20221126"}),
        SuiteResult("bandwidth", checks=[Check("bandwidth", "iperf3 h1->h2", True)],
                    measurements=[
                        Measurement("bandwidth", "throughput_gbps", bandwidth_gbps * wobble,
                                    "Gbit/s", Better.HIGHER, {**pair, "protocol": "tcp",
                                                              "streams": "1"}),
                        Measurement("bandwidth", "retransmits", 3.0, "count",
                                    Better.LOWER, {**pair, "protocol": "tcp", "streams": "1"})],
                    tool_versions={"iperf3": "3.12"}),
        SuiteResult("storage", checks=[Check("storage", "fio seq_write", True)],
                    measurements=[
                        Measurement("storage", "seq_write_mbps", 412.0 * wobble, "MB/s",
                                    Better.HIGHER, {"job": "seq_write"}),
                        Measurement("storage", "rand_read_iops", 18250.0 / wobble, "IOPS",
                                    Better.HIGHER, {"job": "rand_read"})],
                    tool_versions={"fio": "fio-3.33"}),
    ]


class Scene(World):
    """The API tests' World, with forge URLs and full suite results."""

    def __init__(self, factory: sessionmaker[Session], clock: FakeClock) -> None:
        super().__init__(factory, clock)
        self.runs_finished = 0

    def component(self, name: str) -> None:
        source, url = FORGES.get(name, ("git", f"https://git.example/{name}.git"))
        with session_scope(self.factory) as session:
            components.create_component(
                session, ComponentConfig(name=name, source=source, url=url), self.clock)

    def finish(self, run_id: int, results: list[SuiteResult] | None = None) -> None:
        self.runs_finished += 1
        super().finish(run_id, suite_results(jitter=self.runs_finished)
                       if results is None else results)

    def run(self, run_id: int, results: list[SuiteResult] | None = None) -> None:
        """Claim and finish a run, a minute apart."""
        self.claim(run_id)
        self.clock.advance(timedelta(minutes=1))
        self.finish(run_id, results)


@dataclass(frozen=True)
class Busy:
    soaking: int
    queued: int
    rejected: int
    soak_run: int  # the soak run in progress
    known_good: int


def busy_pipeline(scene: Scene) -> Busy:
    """Two known-goods, a rejected culprit, a candidate soaking part way, one queued."""
    for name in FORGES:
        scene.component(name)
    scene.testbed("gate1")
    scene.testbed("soak1", role="soak")
    scene.commit("nova", "n1", "Use os-brick 6 for volume attach")
    scene.commit("neutron", "q1", "OVN: skip stale port bindings")
    scene.commit("cinder", "c1", "RBD: flatten clones asynchronously")
    scene.promote_heads()
    scene.commit("nova", "n2", "Libvirt: cache domain capabilities")
    scene.promote_heads()
    # A bandwidth-halving neutron commit: gated, regressed, rejected, blamed.
    scene.commit("neutron", "q2", "Shape egress at 400 Mbit/s " + EVIL)
    gate = scene.reconcile().runs_created[-1]
    scene.run(gate, suite_results(bandwidth_gbps=0.38))
    rejected = scene.reconcile().rejected[0]
    # A fix, now soaking: gate passed, two soak runs passed, the third one running.
    scene.clock.advance(timedelta(minutes=5))
    scene.commit("neutron", "q3", "Revert egress shaping")
    scene.commit("cinder", "c2", "Backup: stream chunks in parallel")
    report = scene.reconcile()
    soaking = report.boarded[-1] if report.boarded else report.formed[-1]
    scene.run(report.runs_created[-1])
    soak_run = scene.reconcile().runs_created[-1]
    for _ in range(2):
        scene.run(soak_run)
        scene.clock.advance(SOAK.interval)
        soak_run = scene.reconcile().runs_created[-1]
    scene.claim(soak_run)
    scene.clock.advance(timedelta(minutes=2))
    # A newer nova commit queues behind the soaking candidate.
    scene.commit("nova", "n3", "Scheduler: weigh by free huge pages")
    queued = scene.reconcile().formed[-1]
    return Busy(soaking=soaking, queued=queued, rejected=rejected, soak_run=soak_run,
                known_good=2)
