"""The testbed interface every driver implements, its spec, and the factory that builds one.

A testbed is a set of named hosts (``h1``, ``h2``…) with addresses, a controller (the worker's
own host, ``host=None``) and a state folder. Suites and recipe hooks only ever talk to this
interface, so the same suite runs on network namespaces (``netns``), on loopback (``local``) and,
later, on real lab hosts (``ssh``).

Cleanup is the contract that matters most: :func:`create_testbed` writes an on-disk record before
creating anything, tears down whatever it built when creation fails, and the returned testbed is
a context manager that always tears down, whatever the body does. What a SIGKILL leaves behind,
:mod:`workers.testbed.janitor` reaps from the records.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal

from workers.testbed import records
from workers.testbed.process import (
    COOKIE_VAR,
    CommandResult,
    InfraError,
    base_env,
    execute,
    kill_group,
    kill_pids,
    pids_with_cookie,
    require_binary,
)

__all__ = [
    "CommandResult",
    "Driver",
    "Host",
    "InfraError",
    "Testbed",
    "TestbedError",
    "TestbedSpec",
    "create_testbed",
]

log = logging.getLogger(__name__)

Driver = Literal["netns", "local"]

ALLOWED_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range
HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
TAG_RE = re.compile(r"^[a-z0-9]{1,12}$")
FIRST_HOST_OFFSET = 11  # .1 is reserved (a future gateway); hosts are .11, .12, …
SWITCH = "sw"  # the switch namespace is cf-<tag>-sw, so no host may be called that
MIN_MTU, MAX_MTU = 576, 65535


class TestbedError(ValueError):
    """The testbed cannot be built as asked (bad spec, bad tag, not root): fix the request."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True, slots=True)
class Host:
    """One machine of the testbed; ``namespace`` is None where hosts are not namespaces."""

    name: str
    address: str
    namespace: str | None


@dataclass(frozen=True, slots=True)
class TestbedSpec:
    """What to build. Validated on construction, so nothing is created from a bad spec.

    Addresses come from the RFC 2544 benchmarking range only: a typo in a config file must
    never make the testbed route or answer for a real network.
    """

    __test__: ClassVar[bool] = False

    name: str
    driver: Driver = "netns"
    hosts: tuple[str, ...] = ("h1", "h2")
    subnet: str = "198.18.0.0/24"
    mtu: int | None = None

    def __post_init__(self) -> None:
        # Config files hand in lists; a frozen spec keeps a tuple.
        object.__setattr__(self, "hosts", tuple(self.hosts))
        if not self.name or not self.name.isprintable() or len(self.name) > 64:
            raise TestbedError(f"testbed name {self.name!r} must be 1-64 printable characters")
        if self.driver not in ("netns", "local"):
            raise TestbedError(f"unknown testbed driver {self.driver!r}: use 'netns' or 'local'")
        if not self.hosts:
            raise TestbedError("a testbed needs at least one host")
        bad = [h for h in self.hosts if not isinstance(h, str) or not HOST_RE.match(h)]
        if bad:
            raise TestbedError(f"bad host names {bad}: 1-8 lower-case letters or digits, "
                               "starting with a letter")
        if SWITCH in self.hosts:
            raise TestbedError(f"host name {SWITCH!r} is reserved for the switch namespace")
        dupes = sorted({h for h in self.hosts if self.hosts.count(h) > 1})
        if dupes:
            raise TestbedError(f"host names must be unique: {dupes} appear more than once")
        network = self.network
        capacity = network.num_addresses - FIRST_HOST_OFFSET - 1  # minus the broadcast address
        if len(self.hosts) > capacity:
            raise TestbedError(f"subnet {network} has room for {max(capacity, 0)} hosts "
                               f"(from .{FIRST_HOST_OFFSET} up), not {len(self.hosts)}")
        if self.mtu is not None and not MIN_MTU <= self.mtu <= MAX_MTU:
            raise TestbedError(f"mtu {self.mtu} is outside {MIN_MTU}..{MAX_MTU}")

    @property
    def network(self) -> ipaddress.IPv4Network:
        try:
            network = ipaddress.ip_network(self.subnet, strict=True)
        except ValueError as exc:
            raise TestbedError(f"subnet {self.subnet!r} is not a network: {exc}") from None
        if not isinstance(network, ipaddress.IPv4Network) or not network.subnet_of(ALLOWED_NET):
            raise TestbedError(f"subnet {self.subnet} must lie inside {ALLOWED_NET} "
                               "(the benchmarking range), so no real network is ever touched")
        return network

    def addresses(self) -> dict[str, str]:
        """Host name to address: .11 for the first host, .12 for the next…"""
        base = self.network.network_address + FIRST_HOST_OFFSET
        return {name: str(base + i) for i, name in enumerate(self.hosts)}


class Testbed(ABC):
    """A built testbed. Use it as a context manager: leaving the block always tears it down.

    ``run`` is for short tool invocations (output captured, timeout mandatory); ``spawn`` is for
    background servers, which the testbed kills on teardown if the caller has not.
    """

    driver: ClassVar[Driver]
    notice: str | None = None

    def __init__(self, spec: TestbedSpec, *, tag: str, state_dir: Path,
                 records_dir: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.tag = tag
        self.state_dir = state_dir
        self.records_dir = records_dir
        self.cookie = secrets.token_hex(8)
        self.hosts: tuple[Host, ...] = self._make_hosts()
        self._by_name = {h.name: h for h in self.hosts}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._built = False
        self._torn_down = False

    # -- what drivers provide -------------------------------------------------------------

    @abstractmethod
    def _make_hosts(self) -> tuple[Host, ...]:
        """The hosts with their addresses and namespaces (nothing is created yet)."""

    def _preflight(self) -> None:
        """Refuse to start when the names we need are taken (before anything is recorded)."""
        if records.path_for(self.records_dir, self.tag).exists():
            raise TestbedError(f"a testbed record for tag {self.tag!r} already exists")

    @abstractmethod
    def _build(self) -> None:
        """Create the testbed; the record is already on disk."""

    @abstractmethod
    def _destroy(self) -> None:
        """Remove what ``_build`` created; must cope with a half-built testbed."""

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace the testbed owns (recorded before creation)."""
        return ()

    @property
    def interface(self) -> str:
        """The name of each host's interface towards the others."""
        return "eth0"

    # -- the interface ----------------------------------------------------------------------

    def host(self, name: str) -> Host:
        try:
            return self._by_name[name]
        except KeyError:
            raise TestbedError(f"testbed {self.name} has no host {name!r} "
                               f"(hosts: {' '.join(self._by_name)})") from None

    def command_for(self, argv: list[str], host: str | None) -> list[str]:
        """``argv`` as it must be executed to run on ``host`` (None: the controller)."""
        if not argv:
            raise ValueError("empty command")
        if host is None:
            return list(argv)
        namespace = self.host(host).namespace
        return ["ip", "netns", "exec", namespace, *argv] if namespace else list(argv)

    def env_for(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment every process gets: clean base, our cookie, then ``env``."""
        return base_env({COOKIE_VAR: self.cookie, **(env or {})})

    def run(self, argv: list[str], *, host: str | None = None, timeout: float,
            env: dict[str, str] | None = None, cwd: Path | None = None) -> CommandResult:
        """Run ``argv`` on ``host`` and wait; InfraError on a missing binary or a timeout."""
        command = self.command_for(argv, host)
        return execute(command, timeout=timeout, env=self.env_for(env), cwd=cwd, display=argv)

    def spawn(self, argv: list[str], *, host: str | None = None,
              log_path: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the background in its own session, output to ``log_path``."""
        command = self.command_for(argv, host)
        env = self.env_for()
        require_binary(command[0], env)
        require_binary(argv[0], env)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            try:
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
            except OSError as exc:
                raise InfraError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        self.track(proc)
        return proc

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        """Have teardown kill ``proc``'s process group (for processes started elsewhere)."""
        self._procs.append(proc)

    def hook_env(self) -> dict[str, str]:
        """Environment variables that describe the testbed to recipe hooks.

        CERTIFIER_TESTBED, CERTIFIER_TESTBED_DRIVER, CERTIFIER_TESTBED_TAG, CERTIFIER_HOSTS
        ("h1 h2"), CERTIFIER_SUBNET, CERTIFIER_STATE_DIR, and per host (name upper-cased)
        CERTIFIER_HOST_<NAME>_ADDR, CERTIFIER_HOST_<NAME>_NS (empty without namespaces) and
        CERTIFIER_HOST_<NAME>_IFACE (the interface to shape or inspect).
        """
        env = {
            "CERTIFIER_TESTBED": self.name,
            "CERTIFIER_TESTBED_DRIVER": self.driver,
            "CERTIFIER_TESTBED_TAG": self.tag,
            "CERTIFIER_HOSTS": " ".join(h.name for h in self.hosts),
            "CERTIFIER_SUBNET": self.spec.subnet,
            "CERTIFIER_STATE_DIR": str(self.state_dir),
        }
        for h in self.hosts:
            key = f"CERTIFIER_HOST_{h.name.upper()}"
            env[f"{key}_ADDR"] = h.address
            env[f"{key}_NS"] = h.namespace or ""
            env[f"{key}_IFACE"] = self.interface
        return env

    # -- lifecycle --------------------------------------------------------------------------

    def setup(self) -> None:
        """Record, then build. On failure the caller must still call ``teardown``."""
        self._preflight()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        records.write(self.records_dir, records.new_record(
            tag=self.tag, testbed=self.name, driver=self.driver, namespaces=self.namespaces,
            cookie=self.cookie))
        self._built = True
        started = time.monotonic()
        self._build()
        log.info("testbed %s (%s, tag %s) built in %.2f s", self.name, self.driver, self.tag,
                 time.monotonic() - started)

    def teardown(self) -> None:
        """Kill our processes and remove everything; safe to call any number of times.

        The record is removed last and only on success, so a failed teardown is retried by
        the janitor rather than forgotten.
        """
        if self._torn_down or not self._built:
            return
        for proc in self._procs:
            kill_group(proc)
        self._procs.clear()
        kill_pids(pids_with_cookie(self.cookie))
        self._destroy()
        records.remove(self.records_dir, self.tag)
        self._torn_down = True

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.teardown()
            return
        try:
            self.teardown()
        except Exception:  # the body's exception is the one to report; keep it
            log.exception("teardown of testbed %s (tag %s) failed; the janitor will retry",
                          self.name, self.tag)


def create_testbed(spec: TestbedSpec, *, tag: str, state_dir: Path,
                   records_dir: Path) -> Testbed:
    """Build the testbed ``spec`` describes, named with ``tag``; use it in a ``with`` block.

    Raises TestbedError for requests that cannot work (bad tag, netns without root: the caller
    decides whether to fall back to ``local``) and InfraError when building fails; in both
    cases nothing is left behind.
    """
    # Imported here: the drivers import this module for the interface.
    from workers.testbed import janitor
    from workers.testbed.local import LocalTestbed
    from workers.testbed.netns import NetnsTestbed

    if not TAG_RE.match(tag):
        raise TestbedError(f"testbed tag {tag!r} must be 1-12 lower-case letters or digits "
                           "(it is part of every namespace and interface name)")
    bed: Testbed
    if spec.driver == "netns":
        if os.geteuid() != 0:
            raise TestbedError("the netns driver needs root (network namespaces); "
                               "use the 'local' driver on this machine")
        require_binary("ip")
        bed = NetnsTestbed(spec, tag=tag, state_dir=state_dir, records_dir=records_dir)
    else:
        bed = LocalTestbed(spec, tag=tag, state_dir=state_dir, records_dir=records_dir)
    janitor.clear_tag(records_dir, tag)
    try:
        bed.setup()
    except BaseException:
        try:
            bed.teardown()
        except Exception:
            log.exception("cleanup after a failed build of %s (tag %s) failed", spec.name, tag)
        raise
    return bed
