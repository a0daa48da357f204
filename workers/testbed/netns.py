"""The ``netns`` driver: hosts as Linux network namespaces, networks as bridges, on this machine.

Layout for tag ``t1`` and a topology with networks ``mgmt`` and ``data``::

    cf-t1-ctl   [eth0 198.18.10.11] ──veth── [ctl-0]   ┐ br-mgmt ┐
    cf-t1-nn    [eth0 198.18.10.1 ] ──veth── [nn-0]    ┘         │ in cf-t1-sw
                [eth1 198.18.11.1 ] ──veth── [nn-1]    ┐ br-data │ (one bridge per network)
    cf-t1-cmp1  [eth0 198.18.11.11] ──veth── [cmp1-1]  ┘         ┘
                [vx-tenant 198.18.20.11]  VXLAN id 1001 over eth0, to every other member

A router (``nn`` above) forwards between its networks; every other host gets static routes via
the first router on the way. Overlays are VXLAN (UDP 4789) or GRE (``gretap`` with a key)
devices inside the member hosts, their MTU the underlay's minus the encapsulation overhead. Link
properties are ``tc`` qdiscs on both ends of a veth pair (``tc`` shapes egress only).

Every veth pair is created directly inside its two namespaces, so the root namespace never sees
a link of ours — unless the topology links the controller to a network (``controller:``), which
makes one veth ``cf-<tag>`` in the root namespace, listed in the record before it exists.
Deleting a namespace deletes its links; names carry the run tag, so several testbeds coexist,
and interface names stay within the kernel's 15 characters whatever the tag.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from certifier.topology import VXLAN_PORT, LinkPlan, Plan, Shaping
from workers.testbed import records
from workers.testbed.base import SWITCH, Host, Target, Testbed, TestbedError
from workers.testbed.process import CommandResult, InfraError, execute, kill_pids

PREFIX = "cf-"
IP_TIMEOUT = 15.0
GONE_TIMEOUT = 10.0
ROOT_LINK_RE = re.compile(r"^cf-([a-z0-9]{1,12})$")
OUR_NAMESPACE = re.compile(rf"^{PREFIX}([a-z0-9]{{1,12}})-([a-z][a-z0-9]{{0,7}})$")
RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
              "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}
MISSING_KERNEL = {
    "netem": "this kernel lacks netem (CONFIG_NET_SCH_NETEM): delay, jitter and loss need it",
    "gretap": "this kernel lacks GRE tunnels (CONFIG_NET_IPGRE): use a vxlan overlay",
    "vxlan": "this kernel lacks VXLAN (CONFIG_VXLAN)",
}


log = logging.getLogger(__name__)


def namespace_name(tag: str, host: str) -> str:
    return f"{PREFIX}{tag}-{host}"


def tag_of(namespace: str) -> str | None:
    """The run tag of one of our namespaces (``cf-<tag>-<host>``), None for any other."""
    match = OUR_NAMESPACE.match(namespace)
    return match.group(1) if match else None


def root_link_name(tag: str) -> str:
    """The controller's veth in the root namespace: ``cf-<tag>``, at most 15 characters."""
    return f"{PREFIX}{tag}"


def _ip(args: list[str]) -> str:
    """Run ``ip ARGS``; its stderr becomes the InfraError message when it fails."""
    result = execute(["ip", *args], timeout=IP_TIMEOUT)
    if not result.ok:
        raise InfraError(f"ip {' '.join(args)} failed: "
                         f"{(result.stderr or result.stdout).strip() or result.returncode}",
                         result)
    return result.stdout


def tool_error(argv: list[str], result: CommandResult, kind: str | None) -> InfraError:
    """The error for a failed ``tc``/``ip``/``bridge`` call; a kernel that lacks ``kind``
    (netem, gretap, vxlan) gets a message that says so instead of "Unknown device type"."""
    text = (result.stderr or result.stdout).strip()
    hint = ""
    if kind in MISSING_KERNEL and ("unknown" in text.lower() or "not supported" in text):
        hint = f" ({MISSING_KERNEL[kind]})"
    return InfraError(f"{' '.join(argv)} failed: {text or result.returncode}{hint}", result)


def _tool(argv: list[str], kind: str | None = None) -> None:
    """Run ``tc``/``bridge``/``sysctl``/``ip`` for a feature the kernel may lack."""
    result = execute(argv, timeout=IP_TIMEOUT)
    if not result.ok:
        raise tool_error(argv, result, kind)


def list_namespaces() -> list[str]:
    """Names of all named network namespaces on this machine."""
    result = execute(["ip", "netns", "list"], timeout=IP_TIMEOUT)
    if not result.ok:
        raise InfraError(f"ip netns list failed: {result.stderr.strip()}", result)
    # Lines look like "cf-t1-h1 (id: 3)" or just "cf-t1-h1".
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def list_root_links() -> list[str]:
    """Names of the links in the root namespace."""
    result = execute(["ip", "-j", "link", "show"], timeout=IP_TIMEOUT)
    if not result.ok:
        raise InfraError(f"ip link show failed: {result.stderr.strip()}", result)
    return [str(link.get("ifname")) for link in json.loads(result.stdout or "[]")]


def namespace_pids(name: str) -> list[int]:
    result = execute(["ip", "netns", "pids", name], timeout=IP_TIMEOUT)
    if not result.ok:
        return []
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def delete_root_links(names: list[str] | tuple[str, ...]) -> list[str]:
    """Delete our links (``cf-<tag>``) from the root namespace; returns those that existed."""
    foreign = [n for n in names if not ROOT_LINK_RE.match(n)]
    if foreign:
        raise ValueError(f"refusing to delete root links outside the {PREFIX} prefix: {foreign}")
    existing = set(list_root_links())
    present = [n for n in names if n in existing]
    for name in present:
        result = execute(["ip", "link", "del", name], timeout=IP_TIMEOUT)
        if not result.ok and "Cannot find device" not in result.stderr:
            raise InfraError(f"ip link del {name} failed: {result.stderr.strip()}", result)
    return present


def destroy_namespaces(names: list[str] | tuple[str, ...]) -> list[str]:
    """Kill every process inside ``names``, delete them and wait until they are gone.

    Only ``cf-`` names are accepted: this is the function that deletes things, and it must
    never be pointed at a namespace that is not ours. Returns the names that existed.
    """
    foreign = [n for n in names if not n.startswith(PREFIX)]
    if foreign:
        raise ValueError(f"refusing to delete namespaces outside the {PREFIX} prefix: {foreign}")
    existing = set(list_namespaces())
    present = [n for n in names if n in existing]
    for name in present:
        kill_pids(namespace_pids(name))
    for name in present:
        result = execute(["ip", "netns", "del", name], timeout=IP_TIMEOUT)
        if not result.ok and "No such file" not in result.stderr:
            raise InfraError(f"ip netns del {name} failed: {result.stderr.strip()}", result)
    deadline = time.monotonic() + GONE_TIMEOUT
    while True:
        left = [n for n in present if n in set(list_namespaces())
                or Path("/run/netns", n).exists()]
        if not left:
            return present
        if time.monotonic() > deadline:
            raise InfraError(f"namespaces still present {GONE_TIMEOUT:g} s after deletion: "
                             f"{' '.join(left)}")
        time.sleep(0.05)


def _rate_bits(rate: str) -> float:
    match = re.fullmatch(r"([0-9.]+)([a-z]+)", rate)
    assert match is not None  # validated by the topology
    return float(match.group(1)) * RATE_UNITS[match.group(2)]


def shaping_commands(ns: str, dev: str, shaping: Shaping) -> list[list[str]]:
    """``tc`` commands giving ``dev`` in ``ns`` its rate limit and netem impairments."""
    tc = ["tc", "-n", ns]
    netem = ["netem", "limit", "10000"]
    if shaping.delay:
        netem += ["delay", shaping.delay, *([shaping.jitter] if shaping.jitter else [])]
    if shaping.loss:
        netem += ["loss", f"{shaping.loss:g}%"]
    commands: list[list[str]] = []
    if shaping.rate and shaping.shaper == "htb":
        commands += [[*tc, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb",
                      "default", "10"],
                     [*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
                      "rate", shaping.rate, "ceil", shaping.rate]]
        if shaping.netem:
            commands.append([*tc, "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "20:",
                             *netem])
        return commands
    tbf: list[str] = []
    if shaping.rate:
        burst = max(int(_rate_bits(shaping.rate) / 8 / 250), 32 * 1024)
        tbf = ["tbf", "rate", shaping.rate, "burst", str(burst), "latency", "50ms"]
    if shaping.netem:
        commands.append([*tc, "qdisc", "replace", "dev", dev, "root", "handle", "1:", *netem])
        if tbf:
            commands.append([*tc, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:",
                             *tbf])
    elif tbf:
        commands.append([*tc, "qdisc", "replace", "dev", dev, "root", "handle", "1:", *tbf])
    return commands


class NetnsTestbed(Testbed):
    """Hosts as namespaces ``cf-<tag>-<host>``, networks as bridges in ``cf-<tag>-sw``."""

    driver = "netns"

    @classmethod
    def reap(cls, record: records.Record) -> list[str]:
        """The common leftovers, then the record's root links and namespaces (ours only)."""
        removed = super().reap(record)
        if os.geteuid() == 0:
            links = [n for n in record.links
                     if (m := ROOT_LINK_RE.match(n)) is not None and m.group(1) == record.tag]
            if links:
                removed += [f"link {n}" for n in delete_root_links(links)]
            mine = [n for n in record.namespaces if tag_of(n) == record.tag]
            if mine:
                removed += destroy_namespaces(mine)
        return removed

    @classmethod
    def leftovers(cls) -> tuple[list[str], list[str]]:
        """Every namespace and root link on this machine: what :meth:`reap_orphans` picks from
        (listed before the records are read, so a testbed being built is never an orphan)."""
        return list_namespaces(), list_root_links()

    @classmethod
    def reap_orphans(cls, namespaces: list[str], links: list[str],
                     orphan: Callable[[str | None], bool], removed: list[str]) -> None:
        """Delete the links and namespaces of ours whose tag ``orphan`` says no live testbed
        holds, adding them to ``removed``; one that will not go is logged, not raised."""
        for name in links:
            match = ROOT_LINK_RE.match(name)
            if match and orphan(match.group(1)):
                try:
                    removed += [f"link {n}" for n in delete_root_links([name])]
                except InfraError as exc:
                    log.error("could not delete orphan link %s: %s", name, exc)
        for name in namespaces:
            if orphan(tag_of(name)) and name not in removed:
                try:
                    removed += destroy_namespaces([name])
                except InfraError as exc:
                    log.error("could not delete orphan namespace %s: %s", name, exc)

    @property
    def plan(self) -> Plan:
        assert self.spec.plan is not None  # every netns spec has one (TestbedSpec)
        return self.spec.plan

    def _make_hosts(self) -> tuple[Host, ...]:
        return tuple(Host(name, address, namespace_name(self.tag, name))
                     for name, address in self.spec.addresses().items())

    @property
    def switch(self) -> str:
        return namespace_name(self.tag, SWITCH)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (*(h.namespace for h in self.hosts if h.namespace), self.switch)

    @property
    def root_links(self) -> tuple[str, ...]:
        return (root_link_name(self.tag),) if self.plan.controller else ()

    def _ns(self, host: str) -> str:
        return namespace_name(self.tag, host)

    def _preflight(self) -> None:
        super()._preflight()
        taken = set(self.namespaces) & set(list_namespaces())
        if taken:
            raise TestbedError(f"namespaces already exist: {' '.join(sorted(taken))} "
                               "(another live testbed with the same tag?)")
        ctl = self.plan.controller
        if ctl is None:
            return
        if root_link_name(self.tag) in list_root_links():
            raise TestbedError(f"link {root_link_name(self.tag)} already exists")
        network = ipaddress.IPv4Network(f"{ctl.address}/{ctl.prefixlen}", strict=False)
        shown = execute(["ip", "-j", "-4", "addr", "show"], timeout=IP_TIMEOUT)
        for link in json.loads(shown.stdout or "[]"):
            for info in link.get("addr_info", []):
                addr = ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}",
                                             strict=False)
                if addr.overlaps(network):
                    raise TestbedError(
                        f"controller link: {link.get('ifname')} in the root namespace already "
                        f"has {info['local']}/{info['prefixlen']}, which overlaps {network} "
                        "(another testbed on the same subnet?)")

    def _build(self) -> None:
        plan = self.plan
        sw = self.switch
        _ip(["netns", "add", sw])
        _ip(["-n", sw, "link", "set", "lo", "up"])
        for net in plan.networks:
            _ip(["-n", sw, "link", "add", net.bridge, "mtu", str(net.mtu), "type", "bridge"])
            _ip(["-n", sw, "link", "set", net.bridge, "up"])
        for host in plan.hosts:
            ns = self._ns(host)
            _ip(["netns", "add", ns])
            _ip(["-n", ns, "link", "set", "lo", "up"])
            if host in plan.routers:
                _tool(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                       "net.ipv4.ip_forward=1"])
        for link in plan.links:
            self._make_link(link)
        for overlay in plan.overlays:
            self._make_overlay(overlay.name)
        for host in plan.hosts:
            self._apply_routes(host)
        if plan.controller is not None:
            self._link_controller()

    def _make_link(self, link: LinkPlan) -> None:
        ns, sw = self._ns(link.host), self.switch
        bridge = next(n.bridge for n in self.plan.networks if n.name == link.network)
        mtu = ["mtu", str(link.mtu)]
        # Both ends are born inside their namespaces: the root namespace never sees them.
        _ip(["link", "add", link.ifname, "netns", ns, *mtu, "type", "veth",
             "peer", "name", link.peer, "netns", sw, *mtu])
        _ip(["-n", sw, "link", "set", link.peer, "master", bridge])
        _ip(["-n", sw, "link", "set", link.peer, "up"])
        _ip(["-n", ns, "addr", "add", f"{link.address}/{link.prefixlen}", "dev", link.ifname])
        _ip(["-n", ns, "link", "set", link.ifname, "up"])
        if link.shaping.any:
            kind = "netem" if link.shaping.netem else None
            for where, dev in ((ns, link.ifname), (sw, link.peer)):
                for command in shaping_commands(where, dev, link.shaping):
                    _tool(command, kind)

    def _make_overlay(self, name: str) -> None:
        overlay = next(o for o in self.plan.overlays if o.name == name)
        prefix = ipaddress.IPv4Network(overlay.subnet).prefixlen
        for host, address, local in overlay.members:
            ns = self._ns(host)
            peers = [underlay for member, _, underlay in overlay.members if member != host]
            if overlay.kind == "vxlan":
                # No "dev": the MTU is ours to set, and a packet one byte too large really is
                # dropped at the underlay (df set) instead of being refused locally.
                _tool(["ip", "-n", ns, "link", "add", overlay.ifname, "mtu", str(overlay.mtu),
                       "type", "vxlan", "id", str(overlay.id), "dstport", str(VXLAN_PORT),
                       "local", local, "df", "set", "nolearning"], "vxlan")
                for peer in peers:
                    _tool(["bridge", "-n", ns, "fdb", "append", "00:00:00:00:00:00", "dev",
                           overlay.ifname, "dst", peer])
            else:
                _tool(["ip", "-n", ns, "link", "add", overlay.ifname, "mtu", str(overlay.mtu),
                       "type", "gretap", "local", local, "remote", peers[0],
                       "key", str(overlay.id)], "gretap")
            _ip(["-n", ns, "addr", "add", f"{address}/{prefix}", "dev", overlay.ifname])
            _ip(["-n", ns, "link", "set", overlay.ifname, "up"])

    def _apply_routes(self, host: str) -> None:
        ns = self._ns(host)
        for route in self.plan.routes:
            if route.host == host:
                _ip(["-n", ns, "route", "replace", route.subnet, "via", route.via])

    def _link_controller(self) -> None:
        ctl = self.plan.controller
        assert ctl is not None
        name, sw = root_link_name(self.tag), self.switch
        bridge = next(n.bridge for n in self.plan.networks if n.name == ctl.network)
        mtu = ["mtu", str(ctl.mtu)]
        _ip(["link", "add", name, *mtu, "type", "veth", "peer", "name", ctl.peer, "netns", sw,
             *mtu])
        _ip(["-n", sw, "link", "set", ctl.peer, "master", bridge])
        _ip(["-n", sw, "link", "set", ctl.peer, "up"])
        _ip(["addr", "add", f"{ctl.address}/{ctl.prefixlen}", "dev", name])
        _ip(["link", "set", name, "up"])

    def _destroy(self) -> None:
        if self.root_links:
            delete_root_links(self.root_links)
        destroy_namespaces(self.namespaces)

    # -- what suites and tests use ------------------------------------------------------

    def host_networks(self, host: str) -> dict[str, tuple[str, str]]:
        addresses = self.plan.addresses_of(host)
        interfaces = self.plan.interfaces_of(host)
        return {net: (addresses[net], interfaces[net]) for net in addresses}

    def targets(self) -> list[Target]:
        plan = self.plan
        names = plan.network_names()
        labelled = len(names) > 1
        found: list[Target] = []
        for a in plan.hosts:
            mine, my_mtu = plan.addresses_of(a), plan.mtus_of(a)
            for b in plan.hosts:
                if a == b:
                    continue
                theirs, their_mtu = plan.addresses_of(b), plan.mtus_of(b)
                shared = [n for n in names if n in mine and n in theirs]
                for net in shared:
                    found.append(Target(a, b, theirs[net], net if labelled else None,
                                        min(my_mtu[net], their_mtu[net])))
                if not shared and (routed := plan.routed(a, b)) is not None:
                    found.append(Target(a, b, routed, "routed"))
        return found

    def _interfaces(self, host: str) -> list[str]:
        self.host(host)  # a clear error for an unknown host
        underlay = [link.ifname for link in self.plan.links_of(host)]
        overlays = [o.ifname for o in self.plan.overlays
                    if any(member == host for member, _, _ in o.members)]
        return underlay + overlays

    def set_node(self, host: str, up: bool) -> None:
        ns = self._ns(host)
        for ifname in self._interfaces(host):
            _ip(["-n", ns, "link", "set", ifname, "up" if up else "down"])
        if up:
            self._apply_routes(host)

    def set_link(self, host: str, network: str, up: bool) -> None:
        self.host(host)
        interfaces = self.plan.interfaces_of(host)
        if network not in interfaces:
            raise TestbedError(f"host {host} has no link to {network!r} "
                               f"(it has: {', '.join(interfaces)})")
        _ip(["-n", self._ns(host), "link", "set", interfaces[network], "up" if up else "down"])
        if up:
            self._apply_routes(host)

    def listening(self, host: str, port: int) -> bool:
        namespace = self.host(host).namespace
        assert namespace is not None
        probe = execute(["ss", "-N", namespace, "-tlnH", "sport", "=", f":{port}"],
                        timeout=5)
        return probe.ok and bool(probe.stdout.strip())
