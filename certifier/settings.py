"""Settings: one YAML file (components, testbeds, soak policy, thresholds) plus the environment.

The environment (prefix ``CERTIFIER_``) says *where* things are — database, broker, data folder,
config file; the YAML file says *what* to certify and how strictly. :func:`load_settings` builds
both once; the web app, the Celery app and the CLI all receive that one object. A bad file raises
:class:`ConfigError` whose message names the key and, where the YAML parser knows it, the line.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from certifier.domain.absoak import SoakPolicy as ABSoakPolicy
from certifier.domain.abtest import ABPolicy
from certifier.domain.bisection import BisectPolicy
from certifier.domain.combination import NAME_RE
from certifier.domain.detector import DetectorPolicy
from certifier.domain.environment import FIGURES as ENVIRONMENT_FIGURES
from certifier.domain.environment import EnvironmentPolicy
from certifier.domain.judgement import FixedLimit, JudgementPolicy, Margin
from certifier.domain.notifications import ALL_EVENTS, Event, RetryPolicy
from certifier.domain.promotion import SoakPolicy
from certifier.limits import (
    BRANCH_MAX,
    PROJECT_MAX,
    PROJECT_SEGMENTS_MAX,
    RECIPE_PATH_MAX,
    URL_MAX,
    Duration,
)
from certifier.sourcepolicy import SourcePolicy, SourceRefused
from certifier.topology import TopologyConfig, TopologyError
from certifier.topology import load as load_topology
from certifier.topology import plan as plan_topology

TESTBED_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
BRANCH_RE = re.compile(
    rf"^(?!.*\.\.)(?!/)(?!.*//)[A-Za-z0-9._/-]{{1,{BRANCH_MAX}}}(?<![./])\Z")
HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,7}\Z")
# A forge project path (``group/sub/name``): no ``..``, no leading '-', no shell metacharacters,
# and no longer than the columns that store it (certifier/limits.py).
PROJECT_RE = re.compile(
    rf"^(?=.{{1,{PROJECT_MAX}}}\Z)(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*"
    rf"(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*){{0,{PROJECT_SEGMENTS_MAX - 1}}}\Z", re.DOTALL
)
# Names of environment variables that hold a token or a webhook secret. The suffix keeps a config
# (or an API client creating a component) from pointing a forge at, say, the database URL.
TOKEN_ENV_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,94}_TOKEN\Z")
SECRET_ENV_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,93}_SECRET\Z")


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""


def _safe_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("must be lower-case letters, digits, '-' or '_', starting with a letter")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentConfig(_Strict):
    name: str
    source: Literal["git", "gitlab", "github", "gerrit"] = "git"
    url: str
    branch: str = "main"
    recipe: Path | None = None
    run_in: Literal["controller", "hosts"] = "controller"
    # Upstream tracking (docs/tracking.md). ``project`` is the forge's project path
    # (GitLab ``path_with_namespace``, GitHub ``owner/repo``, Gerrit project name); derived from
    # ``url`` when absent. ``api_url`` is the forge's API root when it is not the URL's host
    # (GitHub: https://api.github.com; a GitLab under a sub-path). ``poll_interval: null`` turns
    # polling off for this component.
    project: str | None = None
    api_url: str | None = None
    poll_interval: Duration | None = timedelta(minutes=5)
    token_env: str | None = None
    webhook_secret_env: str | None = None

    _name = field_validator("name")(classmethod(lambda cls, v: _safe_name(v)))

    @field_validator("project")
    @classmethod
    def _project(cls, v: str | None) -> str | None:
        if v is not None and not PROJECT_RE.match(v):
            raise ValueError(f"not a safe project path (group/name, no '..'): {v!r}")
        return v

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(rf"https?://[^\s\x00]{{1,{URL_MAX - 8}}}", v):
            raise ValueError(f"api_url must be an http(s) URL of at most {URL_MAX} characters: "
                             f"{v[:80]!r}")
        return v.rstrip("/") if v else v

    @field_validator("poll_interval")
    @classmethod
    def _poll_interval(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(seconds=5):
            raise ValueError("poll_interval must be at least 5s (or null to turn polling off)")
        return v

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, v: str | None) -> str | None:
        if v is not None and not TOKEN_ENV_RE.match(v):
            raise ValueError(f"token_env must name a variable ending in _TOKEN: {v!r}")
        return v

    @field_validator("webhook_secret_env")
    @classmethod
    def _secret_env(cls, v: str | None) -> str | None:
        if v is not None and not SECRET_ENV_RE.match(v):
            raise ValueError(f"webhook_secret_env must name a variable ending in _SECRET: {v!r}")
        return v

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        if not BRANCH_RE.match(v) or v.startswith("-"):
            raise ValueError(f"not a safe branch name: {v!r}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if len(v) > URL_MAX:
            raise ValueError(f"a repository URL or path is at most {URL_MAX} characters")
        if not v or v.startswith("-") or any(c in v for c in "\x00\n\r"):
            raise ValueError(f"not a usable repository URL or path: {v!r}")
        if GIT_REMOTE_HELPER_RE.match(v):  # ext::<command> would run a command
            raise ValueError(f"git remote helpers ('transport::address') are not allowed: {v!r}")
        if _has_password(v):  # GET /api/v1/components shows the URL to anyone: say no secret
            raise ValueError("a repository URL must not carry a password; use a forge source "
                             "with token_env, or a git credential helper")
        return v

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, v: Path | None) -> Path | None:
        if v is not None and any(c in str(v) for c in "\x00\n\r"):
            raise ValueError(f"not a usable recipe folder: {str(v)!r}")
        if v is not None and len(str(v)) > RECIPE_PATH_MAX:
            raise ValueError(f"a recipe folder path is at most {RECIPE_PATH_MAX} characters")
        return v


# ``<transport>::<address>`` makes git run ``git-remote-<transport>`` (``ext::`` runs any command).
GIT_REMOTE_HELPER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")


def _has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:  # not a URL git could use either; git reports that at the first fetch
        return False


class SshHostConfig(_Strict):
    """One lab host of an ``ssh`` testbed.

    ``address`` is the data-plane address the suites ping and measure; the driver assigns no
    addresses, it uses the lab's. ``connect`` is the SSH destination (default: ``address``).
    """

    name: str
    address: str
    connect: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    iface: str = Field(default="eth0", pattern=r"^[A-Za-z0-9_.-]{1,15}$")

    _name = field_validator("name")(classmethod(lambda cls, v: _host_name(v)))

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None
        return v

    @field_validator("connect", "user")
    @classmethod
    def _no_option(cls, v: str | None) -> str | None:
        if v is not None and (not v or v.startswith("-") or any(c.isspace() for c in v)):
            raise ValueError(f"{v!r} must not be empty, start with '-' or contain spaces")
        return v


class SshConfig(_Strict):
    """How the ``ssh`` driver reaches its hosts: always BatchMode, a key, checked host keys."""

    user: str = "root"
    key: Path
    known_hosts: Path | None = None  # None: the worker's own ~/.ssh/known_hosts
    accept_new_host_keys: bool = False
    port: int = Field(default=22, ge=1, le=65535)
    connect_timeout_s: float = Field(default=5, gt=0, le=120)
    # A folder on the remote hosts (we make cf-<tag> in it), not a temp file of this machine.
    remote_dir: str = Field(default="/tmp", pattern=r"^/[A-Za-z0-9_./-]*$")  # noqa: S108
    proxy_jump: str | None = None
    hosts: tuple[SshHostConfig, ...]

    @model_validator(mode="after")
    def _unique(self) -> SshConfig:
        names = [h.name for h in self.hosts]
        if not names:
            raise ValueError("an ssh testbed needs at least one host")
        if len(set(names)) != len(names):
            raise ValueError("ssh host names must be unique")
        return self


def _host_name(value: str) -> str:
    if not HOST_RE.match(value):
        raise ValueError(f"host names must be 1-8 lower-case letters/digits: {value!r}")
    return value


class TestbedConfig(_Strict):
    """A testbed: ``hosts`` + ``subnet`` (one L2 network), or a ``topology`` (inline or a
    ``topology_file`` relative to the config file), or ``driver: ssh`` with an ``ssh`` section."""

    name: str
    driver: Literal["netns", "local", "ssh"] = "netns"
    role: Literal["gate", "soak"] = "gate"
    hosts: tuple[str, ...] = ("h1", "h2")
    subnet: str = "198.18.0.0/24"
    mtu: int | None = Field(default=None, ge=576, le=65535)
    topology: TopologyConfig | None = None
    topology_file: Path | None = None
    ssh: SshConfig | None = None

    _name = field_validator("name")(classmethod(lambda cls, v: _safe_name(v)))

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [h for h in v if not HOST_RE.match(h)]
        if bad:
            raise ValueError(f"host names must be 1-8 lower-case letters/digits: {bad}")
        if len(set(v)) != len(v):
            raise ValueError("host names must be unique")
        if not v:
            raise ValueError("a testbed needs at least one host")
        return v

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: str) -> str:
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError as exc:
            raise ValueError(f"not a network: {exc}") from None
        if not (isinstance(net, ipaddress.IPv4Network) and net.subnet_of(TESTBED_NETWORK)):
            raise ValueError(f"{v} is outside 198.18.0.0/15, the range reserved for benchmarks")
        return v

    @model_validator(mode="after")
    def _one_shape(self) -> TestbedConfig:
        simple = {"hosts", "subnet", "mtu"} & self.model_fields_set
        if self.topology is not None and self.topology_file is not None:
            raise ValueError("give either topology or topology_file, not both")
        if (self.topology is not None or self.topology_file is not None) and simple:
            raise ValueError(f"{', '.join(sorted(simple))} cannot be combined with a topology "
                             "(declare hosts and networks in the topology)")
        if self.topology is not None:
            try:
                plan_topology(self.topology)
            except TopologyError as exc:
                raise ValueError(f"topology: {exc}") from None
        if (self.driver == "ssh") != (self.ssh is not None):
            raise ValueError("driver ssh needs an ssh section (and only it may have one)")
        if self.driver == "ssh" and (simple - {"mtu"} or self.topology or self.topology_file):
            raise ValueError("an ssh testbed lists its hosts under ssh.hosts")
        return self

    def host_names(self) -> tuple[str, ...]:
        if self.ssh is not None:
            return tuple(h.name for h in self.ssh.hosts)
        if self.topology is not None:
            return tuple(h.name for h in self.topology.host_configs())
        return self.hosts

    def subnets(self) -> list[ipaddress.IPv4Network]:
        """The networks this testbed creates (none for ssh: the lab's are not ours)."""
        if self.driver == "ssh":
            return []
        if self.topology is not None:
            return self.topology.subnets()
        if self.topology_file is not None:
            return []  # checked once the file is loaded (load_config_file)
        return [ipaddress.IPv4Network(self.subnet)]


class SoakConfig(_Strict):
    duration: Duration = timedelta(days=7)
    interval: Duration = timedelta(hours=6)
    min_runs: int = Field(default=4, ge=1)
    max_infra_retries: int = Field(default=2, ge=0, le=20)
    infra_backoff: Duration = timedelta(seconds=30)  # first retry; doubles per retry after
    infra_backoff_max: Duration = timedelta(minutes=10)
    # Runs of the same kind a failed check or a regression gets before it rejects (0: none); a
    # check that passes on its recheck is flaky and blocks promotion until waived.
    recheck_failed: int = Field(default=1, ge=0, le=5)
    # Soak runs added after the planned soak while the A/B statistics cannot decide some series
    # yet (too few runs for the level): the soak is extended, never cut short (0: no extension).
    max_extra_runs: int = Field(default=8, ge=0, le=100)

    def planned_runs(self) -> int:
        return max(1, math.ceil(self.duration / self.interval), self.min_runs)

    def policy(self) -> SoakPolicy:
        return SoakPolicy(duration=self.duration, interval=self.interval, min_runs=self.min_runs,
                          max_infra_retries=self.max_infra_retries,
                          infra_backoff=self.infra_backoff,
                          infra_backoff_max=self.infra_backoff_max,
                          recheck_failed=self.recheck_failed,
                          max_extra_runs=self.max_extra_runs)


class MarginConfig(_Strict):
    max_worse_pct: float = Field(default=20.0, ge=0)
    min_abs: float = Field(default=0.0, ge=0)


class ThresholdsConfig(_Strict):
    default: MarginConfig = MarginConfig()
    metrics: dict[str, MarginConfig] = Field(default_factory=dict)
    limits: tuple[str, ...] = ()

    @field_validator("metrics")
    @classmethod
    def _metric_keys(cls, v: dict[str, MarginConfig]) -> dict[str, MarginConfig]:
        bad = [k for k in v if not re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", k)]
        if bad:
            raise ValueError(f"metric keys are written suite.metric, e.g. ping.rtt_avg_ms: {bad}")
        return v

    @field_validator("limits")
    @classmethod
    def _limits(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for text in v:
            FixedLimit.parse(text)
        return v

    def policy(self) -> JudgementPolicy:
        return JudgementPolicy(
            default_margin=Margin(self.default.max_worse_pct, self.default.min_abs),
            margins={k: Margin(m.max_worse_pct, m.min_abs) for k, m in self.metrics.items()},
            limits=tuple(FixedLimit.parse(t) for t in self.limits),
        )


class DetectorConfig(_Strict):
    """The statistical regression detector (``certifier/domain/detector.py``) during soak.

    Each soak run tests the candidate's runs so far against the known-good's newest
    ``baseline_window`` runs on the same testbed, for every series with at least
    ``min_baseline_runs`` of them (fewer: the margin in ``thresholds`` is the only numeric
    gate). ``false_reject_target`` is the chance that a good candidate's whole soak is rejected
    by noise; ``floor_pct`` the smallest shift that counts (per metric in ``floors``).
    ``baseline_every``: a control run of the known-good after every N soak runs, so the baseline
    follows the testbed's drift (0: none).
    """

    enabled: bool = True
    false_reject_target: float = Field(default=0.05, gt=0, lt=0.5)
    min_baseline_runs: int = Field(default=20, ge=5, le=1000)
    min_candidate_runs: int = Field(default=5, ge=2, le=100)
    baseline_window: int = Field(default=40, ge=5, le=1000)
    floor_pct: float = Field(default=1.0, ge=0, le=100)
    floors: dict[str, float] = Field(default_factory=dict)
    baseline_every: int = Field(default=4, ge=0, le=1000)

    @field_validator("floors")
    @classmethod
    def _floor_keys(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k in v if not re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", k)]
        if bad:
            raise ValueError(f"metric keys are written suite.metric, e.g. ping.rtt_p99_ms: {bad}")
        negative = [k for k, f in v.items() if not 0 <= f <= 100]
        if negative:
            raise ValueError(f"floors are percentages between 0 and 100: {negative}")
        return v

    @model_validator(mode="after")
    def _window(self) -> DetectorConfig:
        if self.baseline_window < self.min_baseline_runs:
            raise ValueError(f"baseline_window ({self.baseline_window}) is smaller than "
                             f"min_baseline_runs ({self.min_baseline_runs})")
        return self

    def policy(self, soak: SoakConfig) -> DetectorPolicy | None:
        if not self.enabled:
            return None
        planned = max(1, math.ceil(soak.duration / soak.interval), self.min_candidate_runs)
        return DetectorPolicy.soak(
            runs=planned, false_reject_target=self.false_reject_target,
            min_runs=self.min_candidate_runs, min_baseline=self.min_baseline_runs,
            baseline_window=self.baseline_window, floor_pct=self.floor_pct,
            floors=dict(self.floors))


class PingSuiteConfig(_Strict):
    """``count`` pings at ``interval`` per pair and network; pairs run ``concurrency`` at once.

    ``mtu_check`` also sends one full-size ``ping -M do`` per pair and network (a host with a
    wrong MTU still answers small pings)."""

    count: int = Field(default=20, ge=1, le=10000)
    interval: float = Field(default=0.05, ge=0.002, le=10)
    mtu_check: bool = True
    concurrency: int = Field(default=8, ge=1, le=64)


PAIR_RE = r"^[a-z][a-z0-9]{0,7}->[a-z][a-z0-9]{0,7}(@[a-z][a-z0-9]{0,7})?$"


class BandwidthSuiteConfig(_Strict):
    """iperf3 tests per pair, each ``duration_s`` long: TCP with ``streams`` streams, the same
    in reverse (``reverse``), TCP with ``parallel_streams`` (0: skip) and UDP at
    ``udp_rate_mbit`` (0: skip). ``pairs``: ``first``, ``all`` or a list like
    ``["compute1->compute2@tenant"]``."""

    duration_s: float = Field(default=3, gt=0, le=600)
    streams: int = Field(default=1, ge=1, le=128)
    pairs: Literal["first", "all"] | tuple[Annotated[str, Field(pattern=PAIR_RE)], ...] = "first"
    reverse: bool = True
    parallel_streams: int = Field(default=4, ge=0, le=128)
    udp_rate_mbit: float = Field(default=100, ge=0, le=100_000)
    omit_s: float = Field(default=0, ge=0, le=60)
    retries: int = Field(default=2, ge=0, le=10)


StorageJob = Literal["seq_write", "seq_read", "rand_write", "rand_read"]


class StorageSuiteConfig(_Strict):
    """fio on a loop-mounted ext4 in the testbed's state folder; ``size`` per job file,
    ``runtime_s`` per job."""

    size: str = Field(default="64M", pattern=r"^[1-9][0-9]{0,5}[KMG]$")
    runtime_s: float = Field(default=2, gt=0, le=600)
    jobs: tuple[StorageJob, ...] = ("seq_write", "seq_read", "rand_write", "rand_read")
    direct: bool = True
    iodepth: int = Field(default=16, ge=1, le=1024)


class UpgradeSuiteConfig(_Strict):
    """The upgrade-preservation suite (``docs/recipes.md``): known-good deployed, resources
    created, upgraded in place to the candidate under a continuous ping, resources verified.

    ``run_kinds``: the run kinds it runs in (it needs a known-good to start from). The ping goes
    from ``ping_from`` to ``ping_to`` (default: the testbed's first two hosts) every
    ``ping_interval`` seconds, from ``settle_s`` before the first ``upgrade`` hook to ``settle_s``
    after the last. ``max_outage_s``, when set, is also a check (tripleo-upgrade's loss limit).
    """

    enabled: bool = True
    run_kinds: tuple[Literal["gate", "soak", "baseline", "bisect"], ...] = (
        "gate", "soak", "bisect")
    ping_interval: float = Field(default=0.05, ge=0.002, le=1)
    ping_from: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9]{0,7}$")
    ping_to: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9]{0,7}$")
    settle_s: float = Field(default=0.5, ge=0, le=60)
    max_outage_s: float | None = Field(default=None, gt=0)


SuiteName = Literal["ping", "bandwidth", "storage"]


class SuitesConfig(_Strict):
    enabled: tuple[SuiteName, ...] = ("ping", "bandwidth", "storage")
    ping: PingSuiteConfig = PingSuiteConfig()
    bandwidth: BandwidthSuiteConfig = BandwidthSuiteConfig()
    storage: StorageSuiteConfig = StorageSuiteConfig()
    upgrade: UpgradeSuiteConfig = UpgradeSuiteConfig()


class BisectionConfig(_Strict):
    """Culprit finding after a rejection (docs/architecture.md, "Culprit finding"): bisect runs
    on the gate testbed, at most ``max_steps`` of them per rejection, infra retries as in
    ``soak``. Turned off, a rejection that changed several components leads to isolation, and a
    running culprit finding stops at the next reconcile pass."""

    enabled: bool = True
    max_steps: int = Field(default=16, ge=1, le=200)
    # A failing step counts only once a second run of the same combination fails the same way.
    confirm_failures: bool = True

    def policy(self, soak: SoakConfig) -> BisectPolicy | None:
        if not self.enabled:
            return None
        return BisectPolicy(max_steps=self.max_steps, confirm_failures=self.confirm_failures,
                            max_infra_retries=soak.max_infra_retries,
                            infra_backoff=soak.infra_backoff,
                            infra_backoff_max=soak.infra_backoff_max)


class EnvironmentConfig(_Strict):
    """The environment check (``certifier/domain/environment.py``): a run whose host pressure or
    calibration probe is out of the testbed's usual range is ``infra_error``, not the
    candidate's fault. Usual range: the median of the newest ``window`` runs with figures on the
    same testbed plus ``mad_k`` scaled MADs, at least ``floors`` away (per figure); ``ceilings``
    refuse whatever the history, and are the only test below ``min_history`` runs.
    ``probe`` runs the calibration probe at the start and end of each run; ``probe_fio`` its
    fio part."""

    enabled: bool = True
    window: int = Field(default=20, ge=3, le=1000)
    min_history: int = Field(default=5, ge=3, le=1000)
    mad_k: float = Field(default=4.0, gt=0, le=100)
    floors: dict[str, float] = Field(default_factory=dict)
    ceilings: dict[str, float | None] = Field(default_factory=dict)
    probe: bool = True
    probe_fio: bool = True

    @field_validator("floors", "ceilings")
    @classmethod
    def _figures(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(k for k in v if k not in ENVIRONMENT_FIGURES)
        if unknown:
            raise ValueError(f"unknown figures {unknown}; known: "
                             f"{', '.join(ENVIRONMENT_FIGURES)}")
        negative = sorted(k for k, x in v.items() if x is not None and not 0 <= x < math.inf)
        if negative:
            raise ValueError(f"must be 0 or more: {negative}")
        return v

    @model_validator(mode="after")
    def _history(self) -> EnvironmentConfig:
        if self.window < self.min_history:
            raise ValueError(f"window ({self.window}) is smaller than min_history "
                             f"({self.min_history})")
        return self

    def policy(self) -> EnvironmentPolicy:
        return EnvironmentPolicy(enabled=self.enabled, window=self.window,
                                 min_history=self.min_history, mad_k=self.mad_k,
                                 floors=dict(self.floors), ceilings=dict(self.ceilings))

class AbConfig(_Strict):
    """A/B runs with contemporaneous controls (issue #12): a run of a kind in ``run_kinds`` that
    has a known-good to compare with also deploys that known-good on a twin testbed (the
    *control*) and runs every enabled suite on both, interleaved in rounds whose order
    alternates (candidate first in even rounds, control first in odd ones).

    Gate and bisect runs measure ``min_rounds`` rounds, then one more while the statistics ask
    for it, ``max_rounds`` at most; soak runs measure ``soak_rounds`` rounds. Baseline runs (the
    known-good itself) and runs before the first known-good stay single-sided.

    ``round_time``: ``split`` (default) gives each round its share of the suites' configured
    measuring time (ping ``count``, bandwidth ``duration_s``, storage ``runtime_s``, divided by
    ``min_rounds``, or ``soak_rounds`` in soak runs, in whole pings or seconds rounded down; at
    least 5 pings, 1 s), so the first rounds measure each side about as long as a single-sided
    run does and an A/B gate costs about twice a single-sided one, not ``2 * min_rounds``
    times; ``full`` runs every round at the configured time.
    """

    enabled: bool = True
    run_kinds: tuple[Literal["gate", "soak", "bisect"], ...] = ("gate", "soak", "bisect")
    min_rounds: int = Field(default=2, ge=1, le=50)
    max_rounds: int = Field(default=3, ge=1, le=50)
    soak_rounds: int = Field(default=4, ge=1, le=50)
    round_time: Literal["split", "full"] = "split"

    @model_validator(mode="after")
    def _bounds(self) -> AbConfig:
        if self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) is more than max_rounds "
                             f"({self.max_rounds})")
        return self

    def gate_policy(self, detector: DetectorConfig) -> ABPolicy:
        """The gate's statistics (rounds, floors) for gate and bisect runs."""
        return ABPolicy(min_rounds=self.min_rounds, max_rounds=self.max_rounds,
                        floor_pct=detector.floor_pct, floors=dict(detector.floors))

    def soak_policy(self, detector: DetectorConfig, soak: SoakConfig) -> ABSoakPolicy:
        """The soak's statistics: calibrated for the planned soak and its extension, with the
        rounds a soak run measures."""
        return ABSoakPolicy(false_reject_target=detector.false_reject_target,
                            planned_runs=soak.planned_runs(),
                            max_extra_runs=soak.max_extra_runs,
                            min_runs=detector.min_candidate_runs,
                            rounds_per_run=self.soak_rounds, floor_pct=detector.floor_pct,
                            floors=dict(detector.floors))


class SchedulerConfig(_Strict):
    reconcile_interval: Duration = timedelta(seconds=10)
    run_timeout: Duration = timedelta(minutes=30)
    hook_timeout: Duration = timedelta(minutes=10)
    # Candidates gating or soaking at once (soak itself stays one at a time): more than 1 lets
    # the gate runs of several candidates use several testbeds in parallel (docs: Scale-out).
    parallel_gates: int = Field(default=1, ge=1, le=32)


class DashboardConfig(_Strict):
    # The overview warns when the known-good is older than this (LKGR-style staleness).
    stale_after: Duration = timedelta(days=3)


class ManifestConfig(_Strict):
    """How long a signed manifest is valid: its ``expires_at`` is at most ``validity`` after its
    ``issued_at``, and the API signs it again every ``validity / 2``, so a copy fetched now is
    valid for at least half of it (``certifier/pipeline/knowngood.py``)."""

    validity: Duration = Field(default=timedelta(days=7), ge=timedelta(minutes=1))


class TrackingConfig(_Strict):
    """Webhooks and polling of upstream sources (docs/tracking.md).

    Secrets are never written here, only the names of the environment variables that hold them;
    a source whose variable is unset or empty refuses every webhook (fail closed).
    """

    # Names of variables, not secrets (hence the noqa).
    gitlab_secret_env: str = "CERTIFIER_GITLAB_WEBHOOK_SECRET"  # noqa: S105
    github_secret_env: str = "CERTIFIER_GITHUB_WEBHOOK_SECRET"  # noqa: S105
    gerrit_secret_env: str = "CERTIFIER_GERRIT_WEBHOOK_SECRET"  # noqa: S105
    poll_tick: Duration = timedelta(seconds=15)  # how often beat looks for components due a poll
    poll_max_backoff: Duration = timedelta(hours=1)
    sweep_interval: Duration = timedelta(seconds=30)  # re-sends stored, unprocessed deliveries
    redispatch_after: Duration = timedelta(seconds=60)
    max_new_commits: int = Field(default=200, ge=1, le=10_000)  # per push/poll, newest kept
    http_timeout: Duration = timedelta(seconds=10)
    git_timeout: Duration = timedelta(seconds=120)

    @field_validator("gitlab_secret_env", "github_secret_env", "gerrit_secret_env")
    @classmethod
    def _secret_env(cls, v: str) -> str:
        if not SECRET_ENV_RE.match(v):
            raise ValueError(f"must name an environment variable ending in _SECRET: {v!r}")
        return v

class NotificationTargetConfig(_Strict):
    """One receiver of outgoing webhooks (``certifier/pipeline/notify.py``).

    Target URLs come only from here, never from an API body or upstream data. The HMAC key is
    exactly one of ``secret`` (in this file), ``secret_file`` (relative to this file, read when
    sending) or ``secret_env`` (a variable ending in _SECRET, read when sending).
    """

    name: str
    url: str
    events: tuple[Event, ...] = ALL_EVENTS
    secret: SecretStr | None = None
    secret_file: Path | None = None
    secret_env: str | None = None
    timeout: Duration = timedelta(seconds=10)

    _name = field_validator("name")(classmethod(lambda cls, v: _safe_name(v)))

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            _ = parts.port  # raises on a port that is not a number in range
        except ValueError:
            parts = None
        if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or len(v) > 2000 or any(c.isspace() or ord(c) < 32 for c in v)):
            raise ValueError(f"must be an http(s) URL with a host, e.g. "
                             f"https://hooks.example.org/certifier: {v!r}")
        if parts.username is not None or parts.password is not None:
            # Credentials in a URL end up in reprs and error messages: they belong in `secret`.
            raise ValueError("must not carry a user or password; the receiver checks the "
                             "HMAC signature made with `secret` instead")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: tuple[Event, ...]) -> tuple[Event, ...]:
        if not v:
            raise ValueError("list at least one event, or leave events out for all of them")
        return tuple(dict.fromkeys(v))

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, v: str | None) -> str | None:
        if v is not None and not SECRET_ENV_RE.match(v):
            raise ValueError(f"must name an environment variable ending in _SECRET: {v!r}")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        if not timedelta(0) < v <= timedelta(seconds=60):
            raise ValueError("timeout must be more than 0 and at most 60s")
        return v

    @model_validator(mode="after")
    def _one_secret(self) -> NotificationTargetConfig:
        given = [k for k in ("secret", "secret_file", "secret_env") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of secret, secret_file or secret_env (the HMAC "
                             f"key that signs each POST); got {', '.join(given) or 'none'}")
        return self


class NotificationsConfig(_Strict):
    """Outgoing webhooks: which targets get which events, and how hard delivery tries.

    A failed POST is retried after ``backoff``, doubling each time up to ``backoff_max``, until
    ``max_attempts`` attempts were made. Beat sends the due deliveries every ``tick``.
    """

    targets: tuple[NotificationTargetConfig, ...] = ()
    max_attempts: int = Field(default=8, ge=1, le=50)
    backoff: Duration = timedelta(seconds=30)
    backoff_max: Duration = timedelta(hours=1)
    tick: Duration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _check(self) -> NotificationsConfig:
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate notification target names: {', '.join(dupes)}")
        if self.backoff <= timedelta(0) or self.backoff_max < self.backoff:
            raise ValueError("backoff must be positive and backoff_max at least backoff")
        if self.tick < timedelta(seconds=1):
            raise ValueError("tick must be at least 1s")
        return self

    def target(self, name: str) -> NotificationTargetConfig | None:
        return next((t for t in self.targets if t.name == name), None)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff, self.backoff_max)

    def with_secret_files_under(self, base: Path, source: Path) -> NotificationsConfig:
        """Resolve ``secret_file`` against the config file's folder, and check it now: a key
        that cannot be read should stop the start, not fail every delivery later."""
        targets = []
        for i, target in enumerate(self.targets):
            if target.secret_file is not None:
                file = base / target.secret_file  # an absolute secret_file stays as it is
                key = f"{source}: notifications.targets.{i}.secret_file"
                try:
                    if not file.read_bytes().strip():
                        raise ConfigError(f"{key}: {file} is empty")
                except OSError as exc:
                    raise ConfigError(f"{key}: cannot read {file}: {exc.strerror}") from None
                target = target.model_copy(update={"secret_file": file})
            targets.append(target)
        return self.model_copy(update={"targets": tuple(targets)})


class CertifierConfig(_Strict):
    """The operator's YAML file."""

    components: tuple[ComponentConfig, ...] = ()
    testbeds: tuple[TestbedConfig, ...] = (TestbedConfig(name="gate1"),)
    soak: SoakConfig = SoakConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    detector: DetectorConfig = DetectorConfig()
    environment: EnvironmentConfig = EnvironmentConfig()
    suites: SuitesConfig = SuitesConfig()
    ab: AbConfig = AbConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    bisection: BisectionConfig = BisectionConfig()
    dashboard: DashboardConfig = DashboardConfig()
    manifest: ManifestConfig = ManifestConfig()
    tracking: TrackingConfig = TrackingConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    sources: SourcePolicy = SourcePolicy()  # which URLs components may name (sourcepolicy.py)

    @model_validator(mode="after")
    def _unique(self) -> CertifierConfig:
        for what, names in (("component", [c.name for c in self.components]),
                            ("testbed", [t.name for t in self.testbeds])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} names: {', '.join(dupes)}")
        nets = [(t.name, net) for t in self.testbeds for net in t.subnets()]
        for i, (a, na) in enumerate(nets):
            for b, nb in nets[i + 1:]:
                if a != b and na.overlaps(nb):
                    raise ValueError(f"testbeds {a} and {b} have overlapping subnets")
        if not self.testbeds:
            raise ValueError("at least one testbed is needed")
        return self


class Settings(BaseSettings):
    """Where things are; read from ``CERTIFIER_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="CERTIFIER_", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path("certifier-data")
    database_url: str | None = None
    broker_url: str | None = None
    config_file: Path | None = Field(default=None, alias="CERTIFIER_CONFIG")
    log_level: str = "INFO"
    # Bearer tokens besides those in the database (`certifier token create`), hashed:
    # "name[/scope]:sha256:<hex>,…" (or "name[/scope]:<secret>"); see certifier/pipeline/tokens.
    api_tokens: str = ""
    # Ed25519 key that signs manifests; default <data_dir>/manifest-signing.key, made on first use.
    signing_key_file: Path | None = None
    # The one testbed this worker may claim (`certifier worker --testbed`); None: any of them.
    worker_testbed: str | None = None
    # Where known-goods' sources are archived (git bundles); default <data_dir>/archive. Point
    # every worker at one shared folder and any of them deploys any known-good without upstream.
    archive_dir: Path | None = None
    config: CertifierConfig = CertifierConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvWithoutConfig(settings_cls))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'certifier.sqlite').resolve()}"

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.data_dir / "manifest-signing.key"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def archive_path(self) -> Path:
        return self.archive_dir or self.data_dir / "archive"

    @property
    def tracking_dir(self) -> Path:
        """Tracking's own mirrors (plain-git sources), one per component."""
        return self.data_dir / "tracking"

    @property
    def records_dir(self) -> Path:
        return self.data_dir / "testbed-records"

    def soak_policy(self) -> SoakPolicy:
        return self.config.soak.policy()

    def bisect_policy(self) -> BisectPolicy | None:
        return self.config.bisection.policy(self.config.soak)

    def judgement_policy(self) -> JudgementPolicy:
        config = self.config
        detector = config.detector.policy(config.soak)
        policy = replace(config.thresholds.policy(), detector=detector)
        if not config.ab.enabled:
            return policy
        return replace(policy, ab=config.ab.gate_policy(config.detector),
                       ab_soak=config.ab.soak_policy(config.detector, config.soak))


class _EnvWithoutConfig(EnvSettingsSource):
    """The environment, except that ``config`` (the parsed YAML) is never read from it.

    ``CERTIFIER_CONFIG`` names the config *file* (``config_file``); without this, pydantic-settings
    would also try to parse that path as the JSON value of the ``config`` field.
    """

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        if field_name == "config":
            return None
        return super().prepare_field_value(field_name, field, value, value_is_complex)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk a composed YAML tree along a pydantic error location to find the line (1-based)."""
    node = root
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            line = next(k for k, v in node.value if v is match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_config_text(text: str, source: str = "<config>", base: Path | None = None
                      ) -> CertifierConfig:
    """Validate YAML text into a config, or raise ConfigError naming the key and line.

    ``base``: the config file's folder, which relative ``sources.local_paths`` are under.
    """
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where}: not valid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    try:
        config = CertifierConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(root, loc)
            where = f" (line {line})" if line else ""
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {key}{where}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    if base is not None:
        config = config.model_copy(update={"sources": config.sources.under(base)})
    _check_sources(config, root, source)
    return config


def _check_sources(config: CertifierConfig, root: yaml.Node | None, source: str) -> None:
    """Every component's URLs against the ``sources`` policy, as for the API."""
    refused = []
    for i, component in enumerate(config.components):
        try:
            config.sources.check_component(component.url, component.api_url)
        except SourceRefused as exc:
            line = _line_of(root, ("components", i, str(exc).split(":", 1)[0]))
            where = f" (line {line})" if line else ""
            refused.append(f"{source}: components.{i}{where}: {exc}")
    if refused:
        raise ConfigError("\n".join(refused))


def load_config_file(path: Path) -> CertifierConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
    base = path.resolve().parent
    config = parse_config_text(text, str(path), base)
    # Recipe folders are written relative to the config file.
    comps = tuple(
        c.model_copy(update={"recipe": base / c.recipe})
        if c.recipe and not c.recipe.is_absolute()
        else c
        for c in config.components
    )
    notifications = config.notifications.with_secret_files_under(base, path)
    config = config.model_copy(update={"components": comps, "notifications": notifications})
    return _with_topology_files(config, base, path)


def _with_topology_files(config: CertifierConfig, base: Path, source: Path) -> CertifierConfig:
    """Resolve testbed files relative to the config file; read and check each topology file."""
    def resolve(file: Path) -> Path:
        return file if file.is_absolute() else base / file

    if not any(t.topology_file or t.ssh for t in config.testbeds):
        return config
    testbeds = []
    for i, bed in enumerate(config.testbeds):
        if bed.topology_file is not None:
            try:
                topology = load_topology(resolve(bed.topology_file))
            except TopologyError as exc:
                raise ConfigError(f"{source}: testbeds.{i}.topology_file: {exc}") from None
            bed = bed.model_copy(update={"topology": topology, "topology_file": None})
        if bed.ssh is not None:
            ssh = bed.ssh.model_copy(update={
                "key": resolve(bed.ssh.key),
                "known_hosts": bed.ssh.known_hosts and resolve(bed.ssh.known_hosts)})
            bed = bed.model_copy(update={"ssh": ssh})
        testbeds.append(bed)
    try:
        return CertifierConfig.model_validate({**dict(config), "testbeds": tuple(testbeds)})
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{source}: {e['msg'].removeprefix('Value error, ')}"
                                     for e in exc.errors())) from None


def load_settings(**overrides: Any) -> Settings:
    """Build the one Settings object from the environment and the config file it names.

    Keyword overrides win over the environment (tests and the demo pass ``data_dir`` or a ready
    ``config``); a config file named by ``CERTIFIER_CONFIG`` is read unless ``config`` is given.
    """
    try:
        base = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(
            f"CERTIFIER_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )) from None
    if base.config_file is not None and "config" not in overrides:
        base = base.model_copy(update={"config": load_config_file(base.config_file)})
    return base
