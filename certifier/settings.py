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
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
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

from certifier.domain.combination import NAME_RE
from certifier.domain.durations import DurationError, parse_duration
from certifier.domain.judgement import FixedLimit, JudgementPolicy, Margin
from certifier.domain.promotion import SoakPolicy

TESTBED_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
BRANCH_RE = re.compile(r"^(?!.*\.\.)(?!/)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<![./])$")
HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator."""


def _duration(value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from None


def _safe_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("must be lower-case letters, digits, '-' or '_', starting with a letter")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentConfig(_Strict):
    name: str
    source: Literal["git", "gitlab", "github", "gerrit"] = "git"
    url: str
    branch: str = "main"
    recipe: Path | None = None
    run_in: Literal["controller", "hosts"] = "controller"

    _name = field_validator("name")(classmethod(lambda cls, v: _safe_name(v)))

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        if not BRANCH_RE.match(v) or v.startswith("-"):
            raise ValueError(f"not a safe branch name: {v!r}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v or v.startswith("-") or any(c in v for c in "\x00\n\r"):
            raise ValueError(f"not a usable repository URL or path: {v!r}")
        return v


class TestbedConfig(_Strict):
    name: str
    driver: Literal["netns", "local"] = "netns"
    role: Literal["gate", "soak"] = "gate"
    hosts: tuple[str, ...] = ("h1", "h2")
    subnet: str = "198.18.0.0/24"
    mtu: int | None = Field(default=None, ge=576, le=65535)

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


class SoakConfig(_Strict):
    duration: Duration = timedelta(days=7)
    interval: Duration = timedelta(hours=6)
    min_runs: int = Field(default=4, ge=1)
    max_infra_retries: int = Field(default=2, ge=0, le=20)

    def policy(self) -> SoakPolicy:
        return SoakPolicy(self.duration, self.interval, self.min_runs, self.max_infra_retries)


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


class PingSuiteConfig(_Strict):
    count: int = Field(default=20, ge=1, le=10000)
    interval: float = Field(default=0.05, ge=0.002, le=10)


class BandwidthSuiteConfig(_Strict):
    duration_s: float = Field(default=3, gt=0, le=600)
    streams: int = Field(default=1, ge=1, le=128)
    pairs: Literal["first", "all"] = "first"


class StorageSuiteConfig(_Strict):
    size: str = Field(default="64M", pattern=r"^[1-9][0-9]{0,5}[KMG]$")
    runtime_s: float = Field(default=2, gt=0, le=600)


SuiteName = Literal["ping", "bandwidth", "storage"]


class SuitesConfig(_Strict):
    enabled: tuple[SuiteName, ...] = ("ping", "bandwidth", "storage")
    ping: PingSuiteConfig = PingSuiteConfig()
    bandwidth: BandwidthSuiteConfig = BandwidthSuiteConfig()
    storage: StorageSuiteConfig = StorageSuiteConfig()


class SchedulerConfig(_Strict):
    reconcile_interval: Duration = timedelta(seconds=10)
    run_timeout: Duration = timedelta(minutes=30)
    hook_timeout: Duration = timedelta(minutes=10)


class CertifierConfig(_Strict):
    """The operator's YAML file."""

    components: tuple[ComponentConfig, ...] = ()
    testbeds: tuple[TestbedConfig, ...] = (TestbedConfig(name="gate1"),)
    soak: SoakConfig = SoakConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    suites: SuitesConfig = SuitesConfig()
    scheduler: SchedulerConfig = SchedulerConfig()

    @model_validator(mode="after")
    def _unique(self) -> CertifierConfig:
        for what, names in (("component", [c.name for c in self.components]),
                            ("testbed", [t.name for t in self.testbeds])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} names: {', '.join(dupes)}")
        nets = [(t.name, ipaddress.ip_network(t.subnet)) for t in self.testbeds]
        for i, (a, na) in enumerate(nets):
            for b, nb in nets[i + 1:]:
                if na.overlaps(nb):
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
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def records_dir(self) -> Path:
        return self.data_dir / "testbed-records"

    def soak_policy(self) -> SoakPolicy:
        return self.config.soak.policy()

    def judgement_policy(self) -> JudgementPolicy:
        return self.config.thresholds.policy()


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


def parse_config_text(text: str, source: str = "<config>") -> CertifierConfig:
    """Validate YAML text into a config, or raise ConfigError naming the key and line."""
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
        return CertifierConfig.model_validate(raw)
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


def load_config_file(path: Path) -> CertifierConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
    config = parse_config_text(text, str(path))
    # Recipe folders are written relative to the config file.
    base = path.resolve().parent
    comps = tuple(
        c.model_copy(update={"recipe": base / c.recipe})
        if c.recipe and not c.recipe.is_absolute()
        else c
        for c in config.components
    )
    return config.model_copy(update={"components": comps})


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
