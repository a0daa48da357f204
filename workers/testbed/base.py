"""The testbed interface every driver implements, its spec, and the factory that builds one.

A testbed is a set of named hosts (``h1``, ``h2``…) on one or more networks, a controller (the
worker's own host, ``host=None``) and a state folder. Suites and recipe hooks only ever talk to
this interface, so the same suite runs on network namespaces (``netns``), on loopback (``local``)
and on real lab hosts (``ssh``).

Cleanup is the contract that matters most: :func:`create_testbed` writes an on-disk record before
creating anything, tears down whatever it built when creation fails, and the returned testbed is
a context manager that always tears down, whatever the body does. What a SIGKILL leaves behind,
:mod:`workers.testbed.reaper` reaps from the records.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import re
import secrets
import subprocess
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Literal

from certifier import topology as topo
from workers.testbed import records, scratch
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

if TYPE_CHECKING:
    from certifier.settings import SshConfig

__all__ = [
    "CommandResult",
    "Driver",
    "Host",
    "InfraError",
    "Scratch",
    "Target",
    "Testbed",
    "TestbedError",
    "TestbedSpec",
]

log = logging.getLogger(__name__)

Driver = Literal["netns", "local", "ssh"]
DRIVERS = ("netns", "local", "ssh")

ALLOWED_NET = topo.ALLOWED_NET
HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,7}\Z")
TAG_RE = re.compile(r"^[a-z0-9]{1,12}\Z")
FIRST_HOST_OFFSET = topo.FIRST_HOST_OFFSET  # .1 is for routers; hosts are .11, .12, …
SWITCH = "sw"  # the switch namespace is cf-<tag>-sw, so no host may be called that
MIN_MTU, MAX_MTU = 576, 65535
PORT_BASE, PORT_SLOTS, PORTS_PER_TAG = 20000, 1400, 32


def _run_local(argv: list[str]) -> CommandResult:
    return execute(argv, timeout=scratch.STEP_TIMEOUT)


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
class Target:
    """One way ``src`` should reach ``dst``: an address on a network they share, or routed.

    ``net`` is None on a testbed with a single network (so measurement labels stay as they
    were before topologies), the network or overlay name otherwise, ``"routed"`` through a
    router. ``mtu`` is the largest packet ``src`` can send there unfragmented, when known.
    """

    src: str
    dst: str
    address: str
    net: str | None = None
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class Scratch:
    """A folder for fio on ``host``: ``filesystem`` is ``ext4-loop`` or why it is not."""

    path: PurePosixPath
    filesystem: str


@dataclass(frozen=True, slots=True)
class TestbedSpec:
    """What to build. Validated on construction, so nothing is created from a bad spec.

    Three shapes: ``hosts`` + ``subnet`` (+ ``mtu``), one L2 network; a ``topology`` (several
    networks, routers, overlays, shaped links); or ``driver="ssh"`` with an ``ssh`` section
    naming lab hosts. Addresses we assign come from the RFC 2544 benchmarking range only: a
    typo in a config file must never make the testbed route or answer for a real network.
    """

    __test__: ClassVar[bool] = False

    name: str
    driver: Driver = "netns"
    hosts: tuple[str, ...] = ("h1", "h2")
    subnet: str = "198.18.0.0/24"
    mtu: int | None = None
    topology: topo.TopologyConfig | None = None
    ssh: SshConfig | None = None
    plan: topo.Plan | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.isprintable() or len(self.name) > 64:
            raise TestbedError(f"testbed name {self.name!r} must be 1-64 printable characters")
        if self.driver not in DRIVERS:
            raise TestbedError(f"unknown testbed driver {self.driver!r}: use "
                               f"{', '.join(repr(d) for d in DRIVERS)}")
        if self.driver == "ssh":
            if self.ssh is None:
                raise TestbedError("the ssh driver needs an ssh section (hosts, key)")
            object.__setattr__(self, "hosts", tuple(h.name for h in self.ssh.hosts))
            return
        if self.topology is not None:
            try:
                planned = topo.plan(self.topology)
            except topo.TopologyError as exc:
                raise TestbedError(f"topology: {exc}") from None
            object.__setattr__(self, "hosts", planned.hosts)
            object.__setattr__(self, "subnet", planned.networks[0].subnet)
            object.__setattr__(self, "plan", planned)
            return
        # Config files hand in lists; a frozen spec keeps a tuple.
        object.__setattr__(self, "hosts", tuple(self.hosts))
        self._check_simple()
        object.__setattr__(self, "plan", topo.plan(topo.simple(self.hosts, self.subnet,
                                                               self.mtu)))

    def _check_simple(self) -> None:
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
        """Host name to its first address (.11 for the first host of a simple testbed…)."""
        if self.ssh is not None:
            return {h.name: h.address for h in self.ssh.hosts}
        assert self.plan is not None  # set by __post_init__ for every non-ssh spec
        return {name: self.plan.primary_address(name) for name in self.plan.hosts}


class Testbed(ABC):
    """A built testbed. Use it as a context manager: leaving the block always tears it down.

    ``run`` is for short tool invocations (output captured, timeout mandatory); ``spawn`` is for
    background servers, which the testbed kills on teardown if the caller has not (``stop``
    kills one earlier).
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
        self._record: records.Record | None = None
        self._scratch: dict[str | None, Scratch] = {}
        self._ports = itertools.count()
        self._port_base = PORT_BASE + (zlib.crc32(tag.encode()) % PORT_SLOTS) * PORTS_PER_TAG

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
    def root_links(self) -> tuple[str, ...]:
        """Links the testbed creates in the root namespace (recorded before creation)."""
        return ()

    @property
    def interface(self) -> str:
        """The name of each host's interface towards the others (its first one)."""
        return "eth0"

    @property
    def storage_host(self) -> str | None:
        """Where the storage suite runs: the controller, unless hosts are other machines."""
        return None

    def interface_of(self, host: str) -> str:
        """``host``'s interface towards the others (for hooks that shape or inspect it)."""
        return self.interface

    def host_networks(self, host: str) -> dict[str, tuple[str, str]]:
        """Network name to (address, interface) of ``host``; empty without a topology."""
        return {}

    def targets(self) -> list[Target]:
        """Every (source, destination, network) that should work: all ordered host pairs."""
        return [Target(a.name, b.name, b.address) for a in self.hosts for b in self.hosts
                if a.name != b.name]

    def set_node(self, host: str, up: bool) -> None:
        """Take every link of ``host`` down (a dead node, e.g. the network node) or up again."""
        raise TestbedError(f"the {self.driver} driver cannot take hosts down")

    def set_link(self, host: str, network: str, up: bool) -> None:
        """Take ``host``'s link to ``network`` down or up again."""
        raise TestbedError(f"the {self.driver} driver cannot take links down")

    # -- the interface ----------------------------------------------------------------------

    def host(self, name: str) -> Host:
        try:
            return self._by_name[name]
        except KeyError:
            raise TestbedError(f"testbed {self.name} has no host {name!r} "
                               f"(hosts: {' '.join(self._by_name)})") from None

    def command_for(self, argv: list[str], host: str | None, *,
                    env: dict[str, str] | None = None, cwd: Path | None = None) -> list[str]:
        """``argv`` as it must be executed to run on ``host`` (None: the controller).

        Local drivers leave ``env`` and ``cwd`` to the caller's ``Popen``; a remote driver
        (ssh) must carry them to the other side, so callers pass them here too.
        """
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
        full_env = self.env_for(env)
        command = self.command_for(argv, host, env=full_env, cwd=cwd)
        return execute(command, timeout=timeout, env=full_env, cwd=cwd, display=argv)

    def spawn(self, argv: list[str], *, host: str | None = None,
              log_path: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the background in its own session, output to ``log_path``."""
        env = self.env_for()
        command = self.command_for(argv, host, env=env)
        require_binary(command[0], env)
        if command[0] != "ssh":
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

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill a process started with ``spawn`` (and, remotely, what it started)."""
        kill_group(proc)

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        """Have teardown kill ``proc``'s process group (for processes started elsewhere)."""
        self._procs.append(proc)

    def listening(self, host: str, port: int) -> bool:
        """Does a TCP socket listen on ``port`` on ``host``?"""
        probe = self.run(["ss", "-tlnH", "sport", "=", f":{port}"], host=host, timeout=5)
        return probe.ok and bool(probe.stdout.strip())

    def next_port(self) -> int:
        """A port for a one-off server: a window of ports derived from the tag, so testbeds
        side by side (on loopback, or sharing lab hosts) rarely meet; a clash shows as
        "Address already in use", which callers retry with the next port."""
        return self._port_base + next(self._ports) % PORTS_PER_TAG

    def workdir(self, host: str | None) -> PurePosixPath:
        """A folder on ``host`` for tool output; the state folder where hosts share this disk."""
        return PurePosixPath(self.state_dir)

    def read_text(self, path: PurePosixPath, host: str | None = None) -> str | None:
        """The text of a file a tool wrote on ``host``; None when it does not exist."""
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InfraError(f"cannot read {path}: {exc.strerror or exc}") from None

    def scratch(self, data_bytes: int, host: str | None = None) -> Scratch:
        """A folder on a dedicated ext4 filesystem (loop device) with room for ``data_bytes``.

        Made on first use, listed in the record before it is created, removed at teardown.
        Without root (or without loop devices) it is a plain folder, and ``filesystem`` says
        why, so the storage suite can say which numbers it measured.
        """
        if host in self._scratch:
            return self._scratch[host]
        folder = self.workdir(host)
        image = scratch.image_path(folder, self.tag)

        def run(argv: list[str]) -> CommandResult:
            return self.run(argv, host=host, timeout=scratch.STEP_TIMEOUT)

        result: Scratch
        if not self._can_mount(host):
            plain = folder / "scratch"
            run(["mkdir", "-p", str(plain)])
            result = Scratch(plain, "plain folder (loop filesystems need root)")
        else:
            self._add_to_record(host, str(image))
            try:
                scratch.create(run, image, scratch.image_size(data_bytes))
                result = Scratch(scratch.mount_point(image), "ext4-loop")
            except InfraError as exc:
                scratch.release(run, image)
                plain = folder / "scratch"
                run(["mkdir", "-p", str(plain)])
                result = Scratch(plain, f"plain folder (loop filesystem failed: {exc})")
        self._scratch[host] = result
        return result

    def _can_mount(self, host: str | None) -> bool:
        return os.geteuid() == 0

    @classmethod
    def reap(cls, record: records.Record) -> list[str]:
        """Remove what a testbed of this driver left behind, from its record alone (its owner
        died without a teardown: SIGKILL, the OOM killer); returns what was removed.

        The reaper (``workers/testbed/reaper.py``) calls the record's driver's; each driver
        removes its own objects and calls this for the common ones: the processes that carry the
        record's cookie and the local scratch images (only root can have made those). Raises
        InfraError when something will not go away (the record is kept and tried again).
        """
        removed = [f"pid {pid}" for pid in kill_pids(pids_with_cookie(record.cookie))]
        if os.geteuid() == 0:
            for image in record.scratch:
                if scratch.ours(image, record.tag):
                    removed += scratch.release(_run_local, PurePosixPath(image))
        return removed

    def _add_to_record(self, host: str | None, image: str) -> None:
        """List a scratch image in the record before it is created (remote ones are covered
        by the remote folder, which the janitor empties)."""
        if host is not None and self.driver == "ssh":
            return
        assert self._record is not None  # setup wrote it
        self._record = self._record.adding(scratch=image)
        records.write(self.records_dir, self._record)

    def _add_remote_to_record(self, remote: records.RemoteHost) -> None:
        """List a remote host in the record before the first thing is made on it."""
        assert self._record is not None  # setup wrote it
        self._record = self._record.adding(remote=remote)
        records.write(self.records_dir, self._record)

    def _release_scratch(self) -> None:
        for host, made in list(self._scratch.items()):
            if made.filesystem == "ext4-loop":
                image = made.path.with_suffix(".img")

                def run(argv: list[str], host: str | None = host) -> CommandResult:
                    return self.run(argv, host=host, timeout=scratch.STEP_TIMEOUT)

                scratch.release(run, image)
            del self._scratch[host]

    def hook_env(self) -> dict[str, str]:
        """Environment variables that describe the testbed to recipe hooks.

        CERTIFIER_TESTBED, CERTIFIER_TESTBED_DRIVER, CERTIFIER_TESTBED_TAG, CERTIFIER_HOSTS
        ("h1 h2"), CERTIFIER_SUBNET (the first network's), CERTIFIER_STATE_DIR, and per host
        (name upper-cased) CERTIFIER_HOST_<NAME>_ADDR, CERTIFIER_HOST_<NAME>_NS (empty without
        namespaces) and CERTIFIER_HOST_<NAME>_IFACE (the interface to shape or inspect). With a
        topology also CERTIFIER_NETWORKS ("mgmt data tenant"), CERTIFIER_ROUTERS,
        CERTIFIER_NETWORK_<NET>_SUBNET and per host and network
        CERTIFIER_HOST_<NAME>_<NET>_ADDR and CERTIFIER_HOST_<NAME>_<NET>_IFACE.
        """
        env = {
            "CERTIFIER_TESTBED": self.name,
            "CERTIFIER_TESTBED_DRIVER": self.driver,
            "CERTIFIER_TESTBED_TAG": self.tag,
            "CERTIFIER_HOSTS": " ".join(h.name for h in self.hosts),
            "CERTIFIER_SUBNET": self.spec.subnet if self.spec.ssh is None else "",
            "CERTIFIER_STATE_DIR": str(self.state_dir),
        }
        for h in self.hosts:
            key = f"CERTIFIER_HOST_{h.name.upper()}"
            env[f"{key}_ADDR"] = h.address
            env[f"{key}_NS"] = h.namespace or ""
            env[f"{key}_IFACE"] = self.interface_of(h.name)
            for net, (address, iface) in self.host_networks(h.name).items():
                env[f"{key}_{net.upper()}_ADDR"] = address
                env[f"{key}_{net.upper()}_IFACE"] = iface
        plan = self.spec.plan
        if plan is not None and self.driver == "netns":
            env["CERTIFIER_NETWORKS"] = " ".join(plan.network_names())
            env["CERTIFIER_ROUTERS"] = " ".join(plan.routers)
            subnets = [(n.name, n.subnet) for n in plan.networks]
            subnets += [(o.name, o.subnet) for o in plan.overlays]
            for name, subnet in subnets:
                env[f"CERTIFIER_NETWORK_{name.upper()}_SUBNET"] = subnet
        return env

    # -- lifecycle --------------------------------------------------------------------------

    def setup(self) -> None:
        """Record, then build. On failure the caller must still call ``teardown``."""
        self._preflight()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._record = records.new_record(
            tag=self.tag, testbed=self.name, driver=self.driver, namespaces=self.namespaces,
            cookie=self.cookie, links=self.root_links)
        records.write(self.records_dir, self._record)
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
        self._release_scratch()
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
