"""Testbed topologies: hosts, L2 networks, routers, overlays and per-link properties, validated.

A topology is data, checked completely before anything is created: every address inside the
RFC 2544 benchmarking range 198.18.0.0/15, no two networks overlapping, every link naming a
declared host, every overlay fitting inside its underlay's MTU after the encapsulation overhead.
The ``netns`` driver (``workers/testbed/netns.py``) builds exactly what :class:`Plan` describes;
this module creates nothing and imports nothing from the workers.

Example (``examples/topologies/small-cloud.yaml``)::

    hosts: [controller, {name: netnode, router: true}, compute1, compute2]
    networks:
      - name: mgmt
        subnet: 198.18.10.0/24
        links: [controller, netnode]
      - name: data
        subnet: 198.18.11.0/24
        mtu: 1500
        links: [netnode, compute1, {host: compute2, rate: 1gbit}]
    overlays:
      - {name: tenant, type: vxlan, id: 1001, underlay: data, subnet: 198.18.20.0/24,
         hosts: [compute1, compute2]}

Overlay MTU accounting follows neutron-lib: VXLAN adds 30 bytes plus the outer IPv4 header
(50 in all), GRE (``gretap`` with a key) 22 bytes plus the outer IPv4 header (42).
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ALLOWED_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}\Z")
RATE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?([kmg]?bit|[kmg]?bps)\Z")
TIME_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(us|ms|s)\Z")
RESERVED_HOSTS = ("sw",)  # the switch namespace is cf-<tag>-sw
RESERVED_NETWORKS = ("routed",)  # the label of pairs that reach each other through a router
DEFAULT_MTU = 1500
MIN_MTU, MAX_MTU = 576, 65535
MAX_HOSTS = 32
MAX_LINKS_PER_HOST = 10  # eth0 … eth9
OVERHEAD = {"vxlan": 50, "gre": 42}  # over an IPv4 underlay (neutron-lib)
VXLAN_PORT = 4789
FIRST_HOST_OFFSET = 11  # hosts get .11, .12, … ; routers .1, .2, … ; the controller .10
FIRST_ROUTER_OFFSET = 1
CONTROLLER_OFFSET = 10


class TopologyError(ValueError):
    """The topology cannot be built as written; the message names the part that is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{what} name {value!r} must be 1-8 lower-case letters or digits, "
                         "starting with a letter (it becomes part of namespace names)")
    return value


class LinkProps(_Strict):
    """Properties of a link; on a network they are the default for each of its links.

    ``rate`` is a ``tc`` rate (``100mbit``, ``1gbit``) applied with ``shaper`` on both ends of
    the link (``tc`` shapes egress only); ``delay``, ``jitter`` and ``loss`` use ``netem``, also
    on both ends, so a ``delay`` of 5ms adds 10 ms to a round trip.
    """

    mtu: int | None = Field(default=None, ge=MIN_MTU, le=MAX_MTU)
    rate: str | None = None
    shaper: Literal["tbf", "htb"] | None = None
    delay: str | None = None
    jitter: str | None = None
    loss: float | None = Field(default=None, ge=0, le=100)

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None and not RATE_RE.match(v):
            raise ValueError(f"rate {v!r} is not a tc rate such as 100mbit or 1gbit")
        return v

    @field_validator("delay", "jitter")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None and not TIME_RE.match(v):
            raise ValueError(f"{v!r} is not a time such as 5ms or 100us")
        return v


class LinkConfig(LinkProps):
    """One host's attachment to a network."""

    host: str
    address: str | None = None


class NetworkConfig(LinkProps):
    """An L2 network: a bridge, and the hosts linked to it (names or link mappings)."""

    name: str
    subnet: str
    links: tuple[str | LinkConfig, ...] = ()

    _check_name = field_validator("name")(classmethod(lambda cls, v: _name(v, "network")))

    def link_configs(self) -> tuple[LinkConfig, ...]:
        return tuple(LinkConfig(host=item) if isinstance(item, str) else item
                     for item in self.links)


class HostConfig(_Strict):
    """A host (a namespace); a ``router`` forwards between the networks it is linked to."""

    name: str
    router: bool = False

    _check_name = field_validator("name")(classmethod(lambda cls, v: _name(v, "host")))


class OverlayMember(_Strict):
    host: str
    address: str | None = None


class OverlayConfig(_Strict):
    """A tenant network tunnelled between hosts over an underlay network.

    ``vxlan`` (UDP port 4789, head-end replication to every member) joins any number of hosts;
    ``gre`` (``gretap`` with ``key`` = ``id``) is point to point: exactly two hosts.
    """

    name: str
    type: Literal["vxlan", "gre"]
    underlay: str
    subnet: str
    id: int = Field(default=1, ge=1, le=16_777_215)
    hosts: tuple[str | OverlayMember, ...]
    mtu: int | None = Field(default=None, ge=68, le=MAX_MTU)

    _check_name = field_validator("name")(classmethod(lambda cls, v: _name(v, "overlay")))

    def members(self) -> tuple[OverlayMember, ...]:
        return tuple(OverlayMember(host=item) if isinstance(item, str) else item
                     for item in self.hosts)


class ControllerLink(_Strict):
    """Link the controller (the worker's own namespace) to one network, e.g. to reach sshd."""

    network: str
    address: str | None = None


class TopologyConfig(_Strict):
    """The whole topology as written in YAML; :func:`plan` checks and resolves it."""

    hosts: tuple[str | HostConfig, ...]
    networks: tuple[NetworkConfig, ...]
    overlays: tuple[OverlayConfig, ...] = ()
    controller: ControllerLink | None = None

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, v: tuple[str | HostConfig, ...]) -> tuple[str | HostConfig, ...]:
        for item in v:
            if isinstance(item, str):
                _name(item, "host")
        return v

    def host_configs(self) -> tuple[HostConfig, ...]:
        return tuple(HostConfig(name=item) if isinstance(item, str) else item
                     for item in self.hosts)

    def subnets(self) -> list[ipaddress.IPv4Network]:
        """Every subnet the topology uses (for overlap checks between testbeds)."""
        subnets = [n.subnet for n in self.networks] + [o.subnet for o in self.overlays]
        return [ipaddress.IPv4Network(s) for s in subnets]


# -- the resolved plan ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Shaping:
    rate: str | None = None
    shaper: str = "tbf"
    delay: str | None = None
    jitter: str | None = None
    loss: float | None = None

    @property
    def any(self) -> bool:
        return bool(self.rate or self.delay or self.loss)

    @property
    def netem(self) -> bool:
        return bool(self.delay or self.loss)


@dataclass(frozen=True, slots=True)
class LinkPlan:
    """A veth pair: ``ifname`` in the host's namespace, ``peer`` on the network's bridge."""

    host: str
    network: str
    ifname: str
    peer: str
    address: str
    prefixlen: int
    mtu: int
    shaping: Shaping


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    name: str
    subnet: str
    bridge: str
    mtu: int


@dataclass(frozen=True, slots=True)
class OverlayPlan:
    name: str
    kind: str  # vxlan | gre
    id: int
    underlay: str
    subnet: str
    ifname: str
    mtu: int
    members: tuple[tuple[str, str, str], ...]  # (host, overlay address, underlay address)


@dataclass(frozen=True, slots=True)
class Route:
    host: str
    subnet: str
    via: str


@dataclass(frozen=True, slots=True)
class ControllerPlan:
    network: str
    address: str
    prefixlen: int
    mtu: int
    peer: str = "ctl"


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the netns driver creates, with every name and address decided."""

    hosts: tuple[str, ...]
    routers: tuple[str, ...]
    networks: tuple[NetworkPlan, ...]
    links: tuple[LinkPlan, ...]
    overlays: tuple[OverlayPlan, ...]
    routes: tuple[Route, ...]
    controller: ControllerPlan | None

    def links_of(self, host: str) -> tuple[LinkPlan, ...]:
        return tuple(link for link in self.links if link.host == host)

    def primary_address(self, host: str) -> str:
        return self.links_of(host)[0].address

    def addresses_of(self, host: str) -> dict[str, str]:
        """Network or overlay name to the host's address on it."""
        found = {link.network: link.address for link in self.links_of(host)}
        for overlay in self.overlays:
            for member, address, _ in overlay.members:
                if member == host:
                    found[overlay.name] = address
        return found

    def mtus_of(self, host: str) -> dict[str, int]:
        found = {link.network: link.mtu for link in self.links_of(host)}
        for overlay in self.overlays:
            if any(member == host for member, _, _ in overlay.members):
                found[overlay.name] = overlay.mtu
        return found

    def interfaces_of(self, host: str) -> dict[str, str]:
        found = {link.network: link.ifname for link in self.links_of(host)}
        for overlay in self.overlays:
            if any(member == host for member, _, _ in overlay.members):
                found[overlay.name] = overlay.ifname
        return found

    def network_names(self) -> tuple[str, ...]:
        return (*(n.name for n in self.networks), *(o.name for o in self.overlays))

    def routed(self, src: str, dst: str) -> str | None:
        """``dst``'s address that ``src`` reaches through routers, if any."""
        reachable = {r.subnet for r in self.routes if r.host == src}
        for link in self.links_of(dst):
            if next(n.subnet for n in self.networks if n.name == link.network) in reachable:
                return link.address
        return None


def _network(text: str, where: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise TopologyError(f"{where}: subnet {text!r} is not a network: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(ALLOWED_NET):
        raise TopologyError(f"{where}: subnet {text} must lie inside {ALLOWED_NET} "
                            "(the benchmarking range), so no real network is ever touched")
    return net


def _address(text: str, net: ipaddress.IPv4Network, where: str) -> ipaddress.IPv4Address:
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise TopologyError(f"{where}: {text!r} is not an IPv4 address") from None
    if addr not in net:
        raise TopologyError(f"{where}: address {addr} is outside its subnet {net}"
                            + ("" if addr in ALLOWED_NET else
                               f" and outside {ALLOWED_NET}, the benchmarking range"))
    if addr in (net.network_address, net.broadcast_address) and net.prefixlen < 31:
        raise TopologyError(f"{where}: {addr} is the network or broadcast address of {net}")
    return addr


class _Allocator:
    """Addresses of one subnet: explicit ones first, then hosts from .11, routers from .1."""

    def __init__(self, net: ipaddress.IPv4Network, where: str) -> None:
        self.net = net
        self.where = where
        self.taken: dict[ipaddress.IPv4Address, str] = {}

    def claim(self, addr: ipaddress.IPv4Address, owner: str) -> None:
        if addr in self.taken:
            raise TopologyError(f"{self.where}: address {addr} is given to both "
                                f"{self.taken[addr]} and {owner}")
        self.taken[addr] = owner

    def next_free(self, offset: int, owner: str) -> ipaddress.IPv4Address:
        last = self.net.num_addresses - 2  # not the broadcast address
        for i in range(offset, last + 1):
            candidate = self.net.network_address + i
            if candidate not in self.taken:
                self.taken[candidate] = owner
                return candidate
        raise TopologyError(f"{self.where}: subnet {self.net} has no free address for {owner} "
                            f"(automatic addresses start at .{offset}); use a larger subnet "
                            "or give addresses explicitly")


def _shaping(net: NetworkConfig, link: LinkConfig) -> Shaping:
    def pick(name: str) -> Any:
        own = getattr(link, name)
        return own if own is not None else getattr(net, name)
    return Shaping(rate=pick("rate"), shaper=pick("shaper") or "tbf", delay=pick("delay"),
                   jitter=pick("jitter"), loss=pick("loss"))


def plan(topology: TopologyConfig) -> Plan:
    """Check ``topology`` completely and decide every name and address; raises TopologyError."""
    hosts = topology.host_configs()
    names = [h.name for h in hosts]
    if not hosts:
        raise TopologyError("hosts: a topology needs at least one host")
    if len(hosts) > MAX_HOSTS:
        raise TopologyError(f"hosts: at most {MAX_HOSTS} hosts, not {len(hosts)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TopologyError(f"hosts: host names must be unique: {dupes} appear more than once")
    reserved = [n for n in names if n in RESERVED_HOSTS]
    if reserved:
        raise TopologyError(f"hosts: host name {reserved[0]!r} is reserved for the switch "
                            "namespace")
    routers = tuple(h.name for h in hosts if h.router)
    if not topology.networks:
        raise TopologyError("networks: a topology needs at least one network")
    net_names = [n.name for n in topology.networks] + [o.name for o in topology.overlays]
    dupes = sorted({n for n in net_names if net_names.count(n) > 1})
    if dupes:
        raise TopologyError(f"networks and overlays need distinct names: {dupes}")
    bad = [n for n in net_names if n in RESERVED_NETWORKS]
    if bad:
        raise TopologyError(f"network name {bad[0]!r} is reserved")

    subnets: list[tuple[str, ipaddress.IPv4Network]] = []
    for i, net in enumerate(topology.networks):
        subnets.append((f"network {net.name}", _network(net.subnet, f"networks[{i}] {net.name}")))
    for i, ov in enumerate(topology.overlays):
        subnets.append((f"overlay {ov.name}", _network(ov.subnet, f"overlays[{i}] {ov.name}")))
    for i, (a, na) in enumerate(subnets):
        for b, nb in subnets[i + 1:]:
            if na.overlaps(nb):
                raise TopologyError(f"{a} ({na}) and {b} ({nb}) have overlapping subnets")

    networks: list[NetworkPlan] = []
    links: list[LinkPlan] = []
    ifcount: dict[str, int] = dict.fromkeys(names, 0)
    allocators: dict[str, _Allocator] = {}
    controller: ControllerPlan | None = None
    pending: list[tuple[int, NetworkConfig, LinkConfig]] = []
    for index, net in enumerate(topology.networks):
        where = f"network {net.name}"
        subnet = ipaddress.IPv4Network(net.subnet)
        alloc = allocators[net.name] = _Allocator(subnet, where)
        mtu = net.mtu or DEFAULT_MTU
        networks.append(NetworkPlan(net.name, net.subnet, f"br-{net.name}", mtu))
        seen: set[str] = set()
        if not net.links:
            raise TopologyError(f"{where}: no links (list the hosts it connects)")
        for link in net.link_configs():
            if link.host not in ifcount:
                raise TopologyError(f"{where}: link to unknown host {link.host!r} "
                                    f"(hosts: {', '.join(names)})")
            if link.host in seen:
                raise TopologyError(f"{where}: host {link.host} is linked twice")
            seen.add(link.host)
            if link.address is not None:
                alloc.claim(_address(link.address, subnet, f"{where}, host {link.host}"),
                            link.host)
            pending.append((index, net, link))
    if topology.controller is not None:
        ctl = topology.controller
        net_cfg = next((n for n in topology.networks if n.name == ctl.network), None)
        if net_cfg is None:
            raise TopologyError(f"controller: unknown network {ctl.network!r}")
        alloc = allocators[ctl.network]
        subnet = alloc.net
        if ctl.address is not None:
            addr = _address(ctl.address, subnet, "controller")
            alloc.claim(addr, "the controller")
        else:
            addr = subnet.network_address + CONTROLLER_OFFSET
            if addr >= subnet.broadcast_address:
                raise TopologyError(f"controller: subnet {subnet} has no .{CONTROLLER_OFFSET}; "
                                    "give the controller an address")
            alloc.claim(addr, "the controller")
        controller = ControllerPlan(ctl.network, str(addr), subnet.prefixlen,
                                    net_cfg.mtu or DEFAULT_MTU)
    for index, net, link in pending:
        alloc = allocators[net.name]
        if link.address is not None:
            addr = ipaddress.IPv4Address(link.address)
        elif link.host in routers:
            addr = alloc.next_free(FIRST_ROUTER_OFFSET, link.host)
        else:
            addr = alloc.next_free(FIRST_HOST_OFFSET, link.host)
        k = ifcount[link.host]
        if k >= MAX_LINKS_PER_HOST:
            raise TopologyError(f"host {link.host}: at most {MAX_LINKS_PER_HOST} links")
        ifcount[link.host] = k + 1
        mtu = link.mtu or net.mtu or DEFAULT_MTU
        links.append(LinkPlan(link.host, net.name, f"eth{k}", f"{link.host}-{index}", str(addr),
                              alloc.net.prefixlen, mtu, _shaping(net, link)))
    isolated = [n for n, count in ifcount.items() if count == 0]
    if isolated:
        raise TopologyError(f"host {isolated[0]} is linked to no network")
    for router in routers:
        joined = sum(1 for link in links if link.host == router)
        if joined < 2:
            raise TopologyError(f"router {router} must be linked to at least two networks, "
                                f"not {joined}")

    overlays = [_overlay(i, ov, links, names) for i, ov in enumerate(topology.overlays)]
    ifnames = [o.ifname for o in overlays]
    clash = sorted({n for n in ifnames if ifnames.count(n) > 1})
    if clash:
        raise TopologyError(f"overlays: interface name {clash[0]} would be used twice")
    routes = _routes(names, routers, networks, links)
    return Plan(tuple(names), routers, tuple(networks), tuple(links), tuple(overlays),
                tuple(routes), controller)


def _overlay(index: int, ov: OverlayConfig, links: list[LinkPlan],
             hosts: list[str]) -> OverlayPlan:
    where = f"overlay {ov.name}"
    subnet = _network(ov.subnet, f"overlays[{index}] {ov.name}")
    members = ov.members()
    if len(members) < 2:
        raise TopologyError(f"{where}: an overlay joins at least two hosts")
    if ov.type == "gre" and len(members) != 2:
        raise TopologyError(f"{where}: GRE is point to point: exactly two hosts, "
                            f"not {len(members)} (use vxlan for more)")
    underlay = {link.host: link for link in links if link.network == ov.underlay}
    if not any(link.network == ov.underlay for link in links):
        raise TopologyError(f"{where}: unknown underlay network {ov.underlay!r}")
    alloc = _Allocator(subnet, where)
    for m in members:
        if m.host not in hosts:
            raise TopologyError(f"{where}: unknown host {m.host!r} (hosts: {', '.join(hosts)})")
        if m.host not in underlay:
            raise TopologyError(f"{where}: host {m.host} is not linked to the underlay "
                                f"network {ov.underlay}")
        if m.address is not None:
            alloc.claim(_address(m.address, subnet, f"{where}, host {m.host}"), m.host)
    names = [m.host for m in members]
    if len(set(names)) != len(names):
        raise TopologyError(f"{where}: a host is listed twice")
    overhead = OVERHEAD[ov.type]
    underlay_mtu = min(underlay[m.host].mtu for m in members)
    room = underlay_mtu - overhead
    if room < MIN_MTU:
        raise TopologyError(f"{where}: underlay MTU {underlay_mtu} minus the {overhead}-byte "
                            f"{ov.type.upper()} overhead leaves {room}, below the minimum "
                            f"{MIN_MTU}")
    if ov.mtu is not None and ov.mtu > room:
        raise TopologyError(f"{where}: mtu {ov.mtu} does not fit: underlay MTU {underlay_mtu} "
                            f"minus the {overhead}-byte {ov.type.upper()} overhead is {room}")
    resolved = []
    for m in members:
        addr = (ipaddress.IPv4Address(m.address) if m.address is not None
                else alloc.next_free(FIRST_HOST_OFFSET, m.host))
        resolved.append((m.host, str(addr), underlay[m.host].address))
    prefix = "vx" if ov.type == "vxlan" else "gt"
    return OverlayPlan(ov.name, ov.type, ov.id, ov.underlay, ov.subnet, f"{prefix}-{ov.name}",
                       ov.mtu or room, tuple(resolved))


def _routes(hosts: list[str], routers: tuple[str, ...], networks: list[NetworkPlan],
            links: list[LinkPlan]) -> list[Route]:
    """Static routes: for each host, every network it is not on, via the first-hop router.

    Networks are the nodes of a graph whose edges are routers; a breadth-first search from the
    host's own networks finds the shortest way and so the gateway on the host's own network.
    """
    on: dict[str, set[str]] = {h: set() for h in hosts}
    address: dict[tuple[str, str], str] = {}
    for link in links:
        on[link.host].add(link.network)
        address[(link.host, link.network)] = link.address
    subnet = {n.name: n.subnet for n in networks}
    routes: list[Route] = []
    for host in hosts:
        # first[net] = (router, network the router shares with the host) for the first hop
        first: dict[str, tuple[str, str]] = {}
        queue: deque[str] = deque()
        for net in sorted(on[host], key=list(subnet).index):
            for router in routers:
                if router != host and net in on[router]:
                    for nxt in sorted(on[router] - on[host], key=list(subnet).index):
                        if nxt not in first:
                            first[nxt] = (router, net)
                            queue.append(nxt)
        while queue:
            net = queue.popleft()
            for router in routers:
                if router != host and net in on[router]:
                    for nxt in sorted(on[router], key=list(subnet).index):
                        if nxt not in first and nxt not in on[host]:
                            first[nxt] = first[net]
                            queue.append(nxt)
        for net in subnet:
            if net in first:
                router, shared = first[net]
                routes.append(Route(host, subnet[net], address[(router, shared)]))
    return routes


def simple(hosts: tuple[str, ...], subnet: str, mtu: int | None) -> TopologyConfig:
    """The ``hosts`` + ``subnet`` form: one L2 network called ``lan`` joining every host."""
    return TopologyConfig(hosts=hosts, networks=(NetworkConfig(
        name="lan", subnet=subnet, mtu=mtu, links=hosts),))


def _first_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {key}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def parse(raw: Any, source: str = "topology") -> TopologyConfig:
    """Validate a mapping (from YAML) into a planned-checked topology, or raise TopologyError."""
    try:
        topology = TopologyConfig.model_validate(raw)
    except ValidationError as exc:
        raise TopologyError(_first_error(exc, source)) from None
    try:
        plan(topology)
    except TopologyError as exc:
        raise TopologyError(f"{source}: {exc}") from None
    return topology


def load(path: Path) -> TopologyConfig:
    """Read and check a topology file; a ``topology:`` key at the top is optional."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read the topology file: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(raw, dict) and set(raw) == {"topology"}:
        raw = raw["topology"]
    return parse(raw, str(path))
