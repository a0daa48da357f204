"""Settings: one YAML file (components, testbeds, soak policy, thresholds) plus the environment.

The environment (prefix ``CERTIFIER_``) says *where* things are — database, broker, data folder,
config file; the YAML file says *what* to certify and how strictly. :func:`load_settings` builds
both once; the web app, the Celery app and the CLI all receive that one object. A bad file raises
:class:`ConfigError` whose message names the key and, where the YAML parser knows it, the line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
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

from certifier.domain.bisection import BisectPolicy
from certifier.domain.combination import NAME_RE
from certifier.domain.judgement import JudgementPolicy
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
from certifier.settings_policy import (
    PAIR_RE as PAIR_RE,
)
from certifier.settings_policy import (
    AbConfig as AbConfig,
)
from certifier.settings_policy import (
    BandwidthSuiteConfig as BandwidthSuiteConfig,
)
from certifier.settings_policy import (
    BisectionConfig as BisectionConfig,
)
from certifier.settings_policy import (
    DetectorConfig as DetectorConfig,
)
from certifier.settings_policy import (
    EnvironmentConfig as EnvironmentConfig,
)
from certifier.settings_policy import (
    MarginConfig as MarginConfig,
)
from certifier.settings_policy import (
    PingSuiteConfig as PingSuiteConfig,
)
from certifier.settings_policy import (
    SoakConfig as SoakConfig,
)
from certifier.settings_policy import (
    StorageSuiteConfig as StorageSuiteConfig,
)
from certifier.settings_policy import Strict as _Strict
from certifier.settings_policy import (
    SuitesConfig as SuitesConfig,
)
from certifier.settings_policy import (
    ThresholdsConfig as ThresholdsConfig,
)
from certifier.settings_policy import (
    UpgradeSuiteConfig as UpgradeSuiteConfig,
)
from certifier.sourcepolicy import SourcePolicy, SourceRefused
from certifier.topology import TopologyConfig, TopologyError
from certifier.topology import load as load_topology
from certifier.topology import plan as plan_topology

if TYPE_CHECKING:  # the scheduler imports this module: imported where it is used
    from certifier.pipeline.scheduler import SchedulerPolicy

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

    def scheduler_policy(self) -> SchedulerPolicy:
        """The reconcile pass's policy, from the config alone (no Celery app is built for it)."""
        from certifier.pipeline.scheduler import SchedulerPolicy

        sched, detector = self.config.scheduler, self.config.detector
        return SchedulerPolicy(soak=self.soak_policy(), run_timeout=sched.run_timeout,
                               parallel_gates=sched.parallel_gates,
                               baseline_every=detector.baseline_every if detector.enabled else 0,
                               notifications=self.config.notifications,
                               bisection=self.bisect_policy())

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
    comps = tuple(c.model_copy(update={"recipe": base / c.recipe})
                  if c.recipe and not c.recipe.is_absolute() else c for c in config.components)
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
