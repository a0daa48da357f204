"""The ``netns`` driver: hosts as Linux network namespaces on one bridge, all on this machine.

Layout for tag ``t1`` and hosts h1, h2::

    cf-t1-h1 [eth0 198.18.0.11] ──veth── [h1] ┐
                                              br0 in cf-t1-sw
    cf-t1-h2 [eth0 198.18.0.12] ──veth── [h2] ┘

The bridge lives in its own "switch" namespace and each veth pair is created directly inside its
two namespaces, so the root namespace never sees a link of ours: nothing can leak onto the real
network, and a crash leaves nothing to clean up but namespaces (deleting a namespace deletes
its links). Names carry the run tag, so several testbeds coexist, and interface names stay
within the kernel's 15 characters whatever the tag.
"""

from __future__ import annotations

import time
from pathlib import Path

from workers.testbed.base import SWITCH, Host, Testbed, TestbedError
from workers.testbed.process import InfraError, execute, kill_pids

PREFIX = "cf-"
BRIDGE = "br0"
IP_TIMEOUT = 15.0
GONE_TIMEOUT = 10.0


def namespace_name(tag: str, host: str) -> str:
    return f"{PREFIX}{tag}-{host}"


def _ip(args: list[str]) -> str:
    """Run ``ip ARGS``; its stderr becomes the InfraError message when it fails."""
    result = execute(["ip", *args], timeout=IP_TIMEOUT)
    if not result.ok:
        raise InfraError(f"ip {' '.join(args)} failed: "
                         f"{(result.stderr or result.stdout).strip() or result.returncode}",
                         result)
    return result.stdout


def list_namespaces() -> list[str]:
    """Names of all named network namespaces on this machine."""
    result = execute(["ip", "netns", "list"], timeout=IP_TIMEOUT)
    if not result.ok:
        raise InfraError(f"ip netns list failed: {result.stderr.strip()}", result)
    # Lines look like "cf-t1-h1 (id: 3)" or just "cf-t1-h1".
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def namespace_pids(name: str) -> list[int]:
    result = execute(["ip", "netns", "pids", name], timeout=IP_TIMEOUT)
    if not result.ok:
        return []
    return [int(p) for p in result.stdout.split() if p.isdigit()]


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


class NetnsTestbed(Testbed):
    """Hosts as namespaces ``cf-<tag>-<host>`` on a bridge in ``cf-<tag>-sw``."""

    driver = "netns"

    def _make_hosts(self) -> tuple[Host, ...]:
        return tuple(Host(name, address, namespace_name(self.tag, name))
                     for name, address in self.spec.addresses().items())

    @property
    def switch(self) -> str:
        return namespace_name(self.tag, SWITCH)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (*(h.namespace for h in self.hosts if h.namespace), self.switch)

    def _preflight(self) -> None:
        super()._preflight()
        taken = set(self.namespaces) & set(list_namespaces())
        if taken:
            raise TestbedError(f"namespaces already exist: {' '.join(sorted(taken))} "
                               "(another live testbed with the same tag?)")

    def _build(self) -> None:
        mtu = ["mtu", str(self.spec.mtu)] if self.spec.mtu else []
        prefix = self.spec.network.prefixlen
        sw = self.switch
        _ip(["netns", "add", sw])
        _ip(["-n", sw, "link", "set", "lo", "up"])
        _ip(["-n", sw, "link", "add", BRIDGE, *mtu, "type", "bridge"])
        _ip(["-n", sw, "link", "set", BRIDGE, "up"])
        for host in self.hosts:
            ns = host.namespace
            assert ns is not None  # every netns host has one: see _make_hosts
            _ip(["netns", "add", ns])
            _ip(["-n", ns, "link", "set", "lo", "up"])
            # Both ends are born inside their namespaces: the root namespace never sees them.
            _ip(["link", "add", self.interface, "netns", ns, *mtu, "type", "veth",
                 "peer", "name", host.name, "netns", sw, *mtu])
            _ip(["-n", sw, "link", "set", host.name, "master", BRIDGE])
            _ip(["-n", sw, "link", "set", host.name, "up"])
            _ip(["-n", ns, "addr", "add", f"{host.address}/{prefix}", "dev", self.interface])
            _ip(["-n", ns, "link", "set", self.interface, "up"])

    def _destroy(self) -> None:
        destroy_namespaces(self.namespaces)
